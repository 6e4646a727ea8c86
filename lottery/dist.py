"""Start ``torch.distributed`` under any launcher, and the few collectives the rest of the code needs.

One entry point (``python -m lottery ...``) runs under ``deepspeed``, ``accelerate launch``, ``torchrun``,
SLURM's ``srun`` or no launcher at all. They all describe the job through environment variables, but
not the same ones: torchrun/deepspeed/accelerate set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and
``MASTER_ADDR``/``MASTER_PORT``; ``srun`` sets ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``
and leaves the master address to us. :func:`read_launch_env` maps each onto one :class:`LaunchEnv`.

Which GPU a rank drives is :func:`cuda_device_index`: its local rank when the process sees every GPU of
the node (torchrun, deepspeed, plain srun), GPU 0 when the launcher narrowed ``CUDA_VISIBLE_DEVICES`` to
one GPU per process (``srun --gpus-per-task=1``).

The backend is NCCL on GPUs and gloo otherwise: DeepSpeed's CPU accelerator would ask for oneCCL
only when its bindings are installed; we ask for gloo explicitly so a CPU-only machine never needs them.
"""

from __future__ import annotations

import copy as copy_module
import os
import pickle
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from lottery.faults import raise_point

T = TypeVar("T")


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str


# `<pid>:<launcher>`, exported with RANK & co: a second init() in the same process (an IMP round after
# theta0) must still say srun, not take the variables it exported itself for torchrun's
LAUNCHER_VAR = "LOTTERY_LAUNCHED_BY"


def free_port() -> int:
    """A TCP port nothing listens on now: a job of its own on a shared node must not take the default."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slurm_master_addr(nodelist: str) -> str:
    """First host of the job's node list, as ``scontrol show hostnames`` expands it."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(
            f"srun job without MASTER_ADDR and `scontrol show hostnames {nodelist}` failed ({err}); "
            "export MASTER_ADDR in the sbatch script"
        ) from err
    return out[0]


def _slurm_port(job_id: str) -> int:
    """A port every task of the job derives alike, so no task has to tell the others."""
    return 20000 + int(job_id) % 20000


def read_launch_env(environ: dict[str, str] | None = None) -> LaunchEnv:
    """Which launcher started this process, and this process's place in the job."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        ours = env.get(LAUNCHER_VAR, "").split(":", 1)
        if len(ours) == 2 and ours[0] == str(os.getpid()):
            launcher = ours[1]  # the variables are our own export (init ran before in this process)
        elif "CROSS_RANK" in env:
            launcher = "deepspeed"
        elif any(key.startswith("ACCELERATE_") for key in env):
            launcher = "accelerate"
        else:
            launcher = "torchrun"
        world = int(env["WORLD_SIZE"])
        return LaunchEnv(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            world_size=world,
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            launcher=launcher,
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        tasks_per_node = env.get("SLURM_NTASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", "1"))
        local_world = int(tasks_per_node.split("(")[0].split(",")[0])
        master = env.get("MASTER_ADDR") or _slurm_master_addr(env.get("SLURM_JOB_NODELIST", "localhost"))
        return LaunchEnv(
            rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            world_size=int(env["SLURM_NTASKS"]),
            local_world_size=local_world,
            master_addr=master,
            master_port=int(env.get("MASTER_PORT") or _slurm_port(env.get("SLURM_JOB_ID", "0"))),
            launcher="srun",
        )
    return LaunchEnv(0, 0, 1, 1, "127.0.0.1", free_port(), "none")


def cuda_device_index(local_rank: int, visible_devices: int, cuda_visible_devices: str | None = None) -> int:
    """The ordinal (among the GPUs this process sees) of the GPU this rank drives.

    Launchers disagree on what a process sees: torchrun and deepspeed leave every GPU of the node
    visible, so the local rank picks one; ``srun --gpus-per-task=1`` (or any launcher that narrows
    ``CUDA_VISIBLE_DEVICES`` per process) leaves one, which is ``cuda:0`` whatever the local rank.
    More ranks on a node than the GPUs they share is a misconfigured job, refused here rather than
    left to fail as "invalid device ordinal" inside CUDA. ``cuda_visible_devices`` only goes into
    that message.
    """
    if visible_devices < 1:
        raise RuntimeError(f"no GPU visible to this process (CUDA_VISIBLE_DEVICES={cuda_visible_devices!r})")
    if local_rank < visible_devices:
        return local_rank
    if visible_devices == 1:
        return 0
    raise RuntimeError(
        f"local rank {local_rank} (LOCAL_RANK / SLURM_LOCALID) but this process sees only {visible_devices} "
        f"GPUs (CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}): more ranks on this node than GPUs. "
        f"Start at most {visible_devices} ranks per node (srun --ntasks-per-node={visible_devices}, "
        f"torchrun --nproc-per-node={visible_devices}, deepspeed --num_gpus={visible_devices}), "
        "or give each task a GPU of its own (srun --gpus-per-task=1)"
    )


def exported_env(launch: LaunchEnv, device: int | None) -> dict[str, str]:
    """The variables torch.distributed and DeepSpeed read, for this rank.

    ``LOCAL_RANK`` is the GPU ordinal when there is a GPU (``device``), not the rank on the node:
    DeepSpeed takes it as one (its engine's ``set_device``, ``zero.Init``, the process group's
    ``device_id``), so a task that sees one GPU must say 0 there, or DeepSpeed asks for a GPU it
    cannot see. :class:`LaunchEnv` keeps the rank on the node.
    """
    return {
        LAUNCHER_VAR: f"{os.getpid()}:{launch.launcher}",
        "RANK": str(launch.rank),
        "LOCAL_RANK": str(launch.local_rank if device is None else device),
        "WORLD_SIZE": str(launch.world_size),
        "LOCAL_WORLD_SIZE": str(launch.local_world_size),
        "MASTER_ADDR": launch.master_addr,
        "MASTER_PORT": str(launch.master_port),
    }


def backend_name() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init() -> LaunchEnv:
    """Initialise the process group (idempotent). Must be called on every rank before any collective.

    On a GPU, the rank drives the GPU :func:`cuda_device_index` picks, and ``LOCAL_RANK`` is exported as
    that GPU's ordinal (see :func:`exported_env`). On CPU, ranks share the cores: unless OMP_NUM_THREADS
    says otherwise, each rank gets its share, since oversubscribed threads make every rank slower than
    one thread each.
    """
    launch = read_launch_env()
    device = None
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        device = cuda_device_index(launch.local_rank, torch.cuda.device_count(), visible)
    os.environ.update(exported_env(launch, device))
    if device is not None:
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // launch.local_world_size))
    if not dist.is_initialized():
        import deepspeed

        # a job killed earlier on this address and port left its buffer behind; reusing it would hang
        _remove_shm_buffers(launch.master_addr, str(launch.master_port), launch.rank)
        deepspeed.init_distributed(dist_backend=backend_name(), auto_mpi_discovery=False)
    return launch


def _remove_shm_buffers(addr: str | None, port: str | None, rank: int) -> None:
    """Delete DeepSpeed's CPU all-reduce buffer of this rank for a master address and port.

    DeepSpeed's CPU all-reduce op keeps a /dev/shm file per rank and job (tens of MB of RAM), named
    after the master address and port, and never removes it.
    """
    if addr and port:
        for leftover in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{addr}_{port}_{rank}"):
            leftover.unlink(missing_ok=True)


def shutdown() -> None:
    """End the process group, and remove this rank's DeepSpeed CPU shared-memory buffer."""
    if not dist.is_initialized():
        return
    this_rank = dist.get_rank()
    dist.barrier()
    dist.destroy_process_group()
    _remove_shm_buffers(os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"), this_rank)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """The ``src`` rank's object on every rank (collective). Used for what one rank reads once."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    holder = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


class RankZeroError(RuntimeError):
    """Rank 0's failure, raised on a rank that did not fail itself (its type could not travel)."""


def on_main(action: Callable[[], T], what: str) -> T:
    """Run `action` on rank 0 only and give its result, or its exception, to every rank (collective).

    Whatever rank 0 alone reads, decides or writes goes through here: if it fails, every rank raises
    the same error at once instead of waiting in the next collective for a peer that has left (under
    plain ``srun`` that wait lasts until the job's time limit). `what` names the decision in the
    error a non-picklable exception is turned into.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        raise_point(what)
        return action()
    outcome: tuple[bool, Any] = (True, None)
    failure: Exception | None = None
    if dist.get_rank() == 0:
        try:
            raise_point(what)
            outcome = (True, action())
        except Exception as err:  # noqa: BLE001 - every failure must reach the other ranks
            failure, outcome = err, (False, _portable(err, what))
    ok, value = broadcast_object(outcome)
    if failure is not None:
        raise failure  # rank 0 keeps its own traceback
    if not ok:
        raise value
    return value


def _portable(err: Exception, what: str) -> Exception:
    """`err` itself when it survives pickling (its type decides the exit code), else its message."""
    try:  # the broadcast pickles it; the receivers rebuild it by its reduce, as deepcopy does here
        pickle.dumps(err)
        copy = copy_module.deepcopy(err)
    except Exception:  # noqa: BLE001 - an exception type with a custom constructor
        return RankZeroError(f"{what}: {type(err).__name__}: {err}")
    return copy if str(copy) == str(err) else RankZeroError(f"{what}: {type(err).__name__}: {err}")


def broadcast_bytes(payload: bytes | None, src: int = 0) -> bytes:
    """Raw bytes from ``src`` to every rank (collective), without pickling them on the way."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        assert payload is not None
        return payload
    device = comm_device()
    size = torch.tensor([len(payload) if dist.get_rank() == src else 0], dtype=torch.long, device=device)
    dist.broadcast(size, src=src)
    buffer = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    if dist.get_rank() == src:
        buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buffer, src=src)
    return buffer.cpu().numpy().tobytes()


def comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU under NCCL, else the CPU (gloo, ccl)."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over all ranks (collective), returned on the tensor's own device."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    moved = tensor.to(comm_device())
    dist.all_reduce(moved)
    return moved.to(tensor.device)


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """(world, *shape): every rank's equally shaped tensor, stacked in rank order (collective)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor.unsqueeze(0)
    moved = tensor.contiguous().to(comm_device())
    out = torch.empty((dist.get_world_size(), *moved.shape), dtype=moved.dtype, device=moved.device)
    dist.all_gather(list(out.unbind(0)), moved)
    return out.to(tensor.device)


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """Sum each named float over all ranks (collective; every rank must pass the same keys)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=comm_device())
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist(), strict=True))


__all__ = [
    "LaunchEnv",
    "all_gather_tensor",
    "all_reduce_sum",
    "all_reduce_tensor",
    "barrier",
    "backend_name",
    "broadcast_bytes",
    "broadcast_object",
    "comm_device",
    "cuda_device_index",
    "exported_env",
    "init",
    "is_main",
    "rank",
    "read_launch_env",
    "shutdown",
    "world_size",
]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank (collective). Used for per-rank predictions."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    holder: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(holder, obj)
    return holder
