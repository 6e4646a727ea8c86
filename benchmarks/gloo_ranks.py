"""Run code on N local CPU ranks over gloo, for the figure scripts: a function, or a script under torchrun.

`run_on_ranks` uses `torch.multiprocessing.spawn` rather than a launcher: the figures that only need
collectives (ticket broadcast, threshold) then start in a second instead of paying DeepSpeed's import
on every rank. The library's collectives (`lottery.dist`) only ask whether torch.distributed is
initialised, so they run unchanged. Each rank writes its result (a JSON-able dict) to a file; the
caller gets them in rank order. `torchrun` starts a script the way jobs start, for the figures that
build a DeepSpeed engine (`lottery.dist.init` reads torchrun's environment).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

# glibc then serves every allocation above 128 KiB with its own mmap and returns it on free, instead
# of raising the threshold as it goes and reusing freed memory silently: every large temporary shows
# in the kernel's high-water mark (VmHWM), which is what `rss.PeakRss` reads. Read at process start,
# so it must be in the environment the ranks are started with.
MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(1 << 17)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, fn: Callable[..., dict], world: int, port: int, out: str, args: tuple) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world)}
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(*args)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()


def run_on_ranks(fn: Callable[..., dict], world: int, *args: Any, fixed_mmap: bool = False) -> list[dict]:
    """`fn(*args)` on `world` gloo ranks (collective inside `fn` is fine); their results in rank order.

    `fn` must be a module-level function. `fixed_mmap`: start the ranks with `MMAP_THRESHOLD`, for
    peak-memory figures.
    """
    saved = dict(os.environ)
    if fixed_mmap:
        os.environ.update(MMAP_THRESHOLD)
    try:
        with tempfile.TemporaryDirectory() as out:
            mp.spawn(_rank_main, args=(fn, world, _free_port(), out, args), nprocs=world, join=True)
            return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def torchrun(script: str, nproc: int, args: list[str], *, fixed_mmap: bool = False) -> None:
    """Run `script args` on `nproc` local ranks under torchrun; raise with the job's last error lines.

    Each rank keeps the thread count `lottery.dist.init` gives it (the cores shared out).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    cmd += ["--master_port", str(_free_port()), script, *args]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    # DeepSpeed's JIT op build runs `ninja` from PATH: the venv's, as the tests' launched jobs do
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if fixed_mmap:
        env.update(MMAP_THRESHOLD)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        # torchrun's own summary ends stderr; the ranks' exceptions are the lines that name an error
        errors = [line for line in proc.stderr.splitlines() if "Error" in line and "error_file" not in line]
        raise RuntimeError(
            f"{Path(script).name} on {nproc} ranks failed (exit {proc.returncode}): "
            + " | ".join(errors[-3:])
        )
