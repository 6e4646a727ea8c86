"""Shared fixtures: a small shapes world, a uniter-mini built for it, and a launcher runner.

The distributed tests start real ranks through the real launchers (deepspeed, accelerate, torchrun)
as subprocesses, on small data, so each run takes tens of seconds on two CPU cores.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The launched commands find the venv's tools first (`run`), and so must this process: DeepSpeed's
# JIT op build runs `ninja` from PATH, and a build log written by another ninja version (the system's)
# is rebuilt from scratch, ~40 s at each switch between an in-process job and a launched one.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
# the small shapes world of the tests; jobs pointed at it pass the same `data.*` (a world built from
# other settings is refused)
SHAPES = {"seed": 0, "train_samples": 512, "val_samples": 64, "samples_per_shard": 128, "feat_dim": 256}


def shapes_overrides() -> dict[str, object]:
    return {f"data.{key}": value for key, value in SHAPES.items()}


@pytest.fixture(autouse=True)
def _stop_signal_handlers_restored():
    """A test that runs a training command in process must not leave SIGTERM/SIGUSR1 caught for the
    tests after it (nor for pytest itself, which a SIGTERM must still stop)."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    from lottery.data.shards import ShapesConfig, build_shapes

    out = tmp_path_factory.mktemp("data") / "shapes"
    return build_shapes(out, ShapesConfig(**SHAPES))


# the same world with 32-px images for a patch model (vilt-mini: 16-px patches, 4 an image)
RENDERED_SHAPES = {**SHAPES, "render_size": 32}


@pytest.fixture(scope="session")
def rendered_shapes_dir(tmp_path_factory) -> Path:
    from lottery.data.shards import ShapesConfig, build_shapes

    out = tmp_path_factory.mktemp("data") / "shapes-32px"
    return build_shapes(out, ShapesConfig(**RENDERED_SHAPES))


@pytest.fixture(scope="session")
def vilt_model_dir(tmp_path_factory, rendered_shapes_dir) -> Path:
    from lottery.train.assets import build_model_from_bert

    out = tmp_path_factory.mktemp("models") / "vilt-mini"
    return build_model_from_bert("minilm", out, data_dir=rendered_shapes_dir, family="vilt")


@pytest.fixture(scope="session")
def mini_model_dir(tmp_path_factory, shapes_dir) -> Path:
    from lottery.train.assets import build_model_from_bert

    return build_model_from_bert(
        "minilm", tmp_path_factory.mktemp("models") / "uniter-mini", data_dir=shapes_dir
    )


@pytest.fixture(scope="session")
def deepspeed_ops() -> None:
    """Build DeepSpeed's CPU shared-memory comm op once, before launched ranks race to build it."""
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        builder.load()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(nproc: int = 2) -> list[str]:
    """The torchrun launcher prefix for `nproc` local ranks on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(free_port()),
    ]


def kill_job(launcher_pid: int) -> None:
    """SIGKILL a launcher and every process under it, as a node that dies takes its whole job.

    Killing the launcher's process group is not enough: torchrun starts each rank in a session of its
    own, so its ranks outlive a `killpg` of the launcher and go on writing the run directory.
    """
    import psutil

    try:
        launcher = psutil.Process(launcher_pid)
        family = [launcher, *launcher.children(recursive=True)]  # listed before any dies and is reparented
    except psutil.NoSuchProcess:
        return
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=30)


# what `dist.init` exports in a process that ran a job in process: a child must not take them for a launcher's
LAUNCH_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "LOTTERY_LAUNCHED_BY",
)


def run(cmd: list[str], timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run a launcher command from the repo root; on failure (if `check`) show its output, which names the cause."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("OMP_NUM_THREADS", None)
    # an in-process job of this session exported its rendezvous (dist.init) and its process group still
    # holds that port: a launched command must find its own, as it would from a shell
    for key in LAUNCH_ENV:
        env.pop(key, None)
    # its own session, and `kill_job` at a timeout, so the launcher's ranks die too (they would hold the CPU and ports
    # for every later test)
    with subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_job(child.pid)
            stdout, stderr = child.communicate()
            raise AssertionError(
                f"{' '.join(cmd)} timed out after {timeout} s (it and its ranks were killed)\n"
                f"{stdout[-4000:]}\n{stderr[-6000:]}"
            ) from None
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def quick_overrides(run_dir: Path, shapes_dir: Path, model_dir: Path, **extra: object) -> list[str]:
    """A pre-training run small enough for CI: 12 steps of batch 8 on the small shapes world."""
    values: dict[str, object] = {
        "run_dir": run_dir,
        **shapes_overrides(),
        "data.dir": shapes_dir,
        "model.dir": model_dir,
        "data.num_workers": 0,
        "data.curriculum": "[]",
        "train.steps": 12,
        "train.batch_size": 8,
        "train.val_batches": 4,
        "train.val_every": 12,
        "train.ckpt_every": 12,
        "train.log_every": 1,
        "optim.lr": 1e-4,
        "optim.warmup_steps": 2,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture(autouse=True, scope="session")
def job_log() -> None:
    """The job log as the command configures it (lottery.logs), so in-process runs print what they would."""
    from lottery import logs

    logs.configure()


@pytest.fixture(scope="session")
def theta0_cache(tmp_path_factory) -> Path:
    """One theta0 cache for the session: jobs that need theta0 build the 4-step one once."""
    return tmp_path_factory.mktemp("theta0-cache")


def theta0_overrides(shapes_dir: Path, model_dir: Path) -> list[str]:
    """`theta0_overrides` of IMP and fine-tune configs: a 4-step theta0 on the small shapes world."""
    values = {
        **shapes_overrides(),
        "data.dir": shapes_dir,
        "model.dir": model_dir,
        "data.num_workers": 0,
        "data.curriculum": "[]",
        "train.steps": 4,
        "train.batch_size": 8,
        "train.val_batches": 2,
        "train.val_every": 4,
        "train.ckpt_every": 4,
    }
    return [f"{key}={value}" for key, value in values.items()]
