"""Fine-tunes side by side: worker processes, each a job of its own with its share of the cores or a GPU.

On CPU ranks, a data-parallel step's gradient all-reduce costs more than a small batch's compute
(measured: 2 ranks x 8 examples ran 1.45 steps/s, one process with both cores 3.2 steps/s at 16), so
independent jobs beat one job on many ranks. On a GPU node each worker drives a GPU of its own
(:func:`finetune_worker_envs`), and ``workers=0`` starts one per visible GPU (:func:`finetune_worker_count`).
Used by ``lottery pipeline`` and ``lottery reproduce``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from lottery.config import AUTO_WORKERS, ConfigError, FinetuneConfig, PretrainConfig

log = logging.getLogger("lottery.train.workers")

# launcher variables a worker must not inherit: it is a job of its own, not a rank of the driver's job
_LAUNCH_KEYS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "CROSS_RANK",
)


# `workers=0` (AUTO_WORKERS): one fine-tune worker per visible GPU, or CPU_WORKERS side by side on a CPU
CPU_WORKERS = 2


def worker_env(threads: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's environment for a job of its own: no launcher variables, ``threads`` OpenMP threads."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k not in _LAUNCH_KEYS}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def worker_threads(cpus: int | None, processes: int) -> int:
    """Each of ``processes`` side-by-side processes' share of the cores (at least one thread):
    oversubscribed threads make every process slower than one thread each."""
    return max(1, (cpus or 1) // processes)


def visible_gpu_ids(environ: Mapping[str, str], gpu_count: int) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` entries of the ``gpu_count`` GPUs this process sees, in CUDA's order.

    Without ``CUDA_VISIBLE_DEVICES`` they are ``0..gpu_count-1``; with it (a SLURM allocation, a shared
    box), its own entries (indices, ``GPU-<uuid>`` or ``MIG-<uuid>``), since a child's
    ``CUDA_VISIBLE_DEVICES`` names physical GPUs, not the driver's renumbered ones. CUDA stops reading
    the list at its first invalid entry, so only the first ``gpu_count`` count.
    """
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(gpu_count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:gpu_count]


def finetune_worker_count(requested: int, gpu_count: int, cuda_visible_devices: str | None = None) -> int:
    """How many fine-tune workers to start: ``requested``, or with ``workers=0`` one per visible GPU
    (``CPU_WORKERS`` without a GPU).

    More workers than GPUs is refused rather than shared round-robin: one process per GPU is the rule
    of every stage (IMP's ``--num_gpus``, :func:`lottery.dist.cuda_device_index`), and two workers on
    one GPU hold two CUDA contexts and two copies of model and optimizer state, so a fine-tune that
    fits alone can run out of memory partway through the sweep. Refusing costs nothing: the driver
    checks before IMP starts, and the fix is one override. ``cuda_visible_devices`` only goes into the
    message.
    """
    if requested == AUTO_WORKERS:
        return gpu_count or CPU_WORKERS
    if gpu_count and requested > gpu_count:
        raise ConfigError(
            f"workers={requested} but {gpu_count} GPU(s) visible "
            f"(CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}): each fine-tune worker needs a GPU of its "
            f"own; set workers={gpu_count} or fewer, or workers=0 for one per GPU"
        )
    return requested


def finetune_worker_envs(
    environ: Mapping[str, str], gpu_count: int, workers: int, threads: int
) -> list[dict[str, str]]:
    """Each fine-tune worker's environment: a job of its own (:func:`worker_env`), and on a GPU node
    ``CUDA_VISIBLE_DEVICES`` = the i-th GPU the driver sees, so worker i drives that GPU as its
    ``cuda:0`` instead of every worker piling onto the driver's first GPU. Without a GPU, the
    environment is the driver's, as it always was. ``workers`` <= ``gpu_count`` is
    :func:`finetune_worker_count`'s to enforce.
    """
    base = worker_env(threads, environ)
    if not gpu_count:
        return [dict(base) for _ in range(workers)]
    gpus = visible_gpu_ids(environ, gpu_count)
    return [{**base, "CUDA_VISIBLE_DEVICES": gpus[index]} for index in range(workers)]


def visible_gpu_count() -> int:
    """The GPUs this process sees (0 on a CPU-only build or machine); torch is imported only here."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_finetune_workers(
    worker_command: list[str],
    jobs: list[FinetuneConfig],
    workers: int,
    gpu_count: int,
    logs: Path,
    label: str,
) -> list[Path]:
    """Run `jobs` on `workers` processes (`worker_command` + ``--part i/n``: each recomputes the same job
    list and runs its share through `lottery.train.sweep`), print each job as it finishes, return the run
    directories. Jobs done before are skipped by the workers, so a rerun continues a stopped sweep."""
    from lottery.report.collect import PRIMARY
    from lottery.train.finetune import run_dir_for
    from lottery.train.sweep import resolve_tickets

    runs = [run_dir_for(job) for job in resolve_tickets(jobs)]
    logs.mkdir(parents=True, exist_ok=True)
    threads = worker_threads(os.cpu_count(), workers)
    envs = finetune_worker_envs(os.environ, gpu_count, workers, threads)
    processes = []
    for index, env in enumerate(envs):
        log_path = logs / f"finetune-part{index}.log"
        command = [*worker_command, "--part", f"{index}/{workers}"]
        processes.append(
            (
                subprocess.Popen(command, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT),
                log_path,
            )
        )
    on_gpus = f", GPUs {', '.join(env['CUDA_VISIBLE_DEVICES'] for env in envs)}" if gpu_count else ""
    log.info(
        f"{label}: {len(jobs)} fine-tunes on {workers} worker(s) x {threads} thread(s){on_gpus}; "
        f"logs in {logs}/"
    )
    began, reported = time.perf_counter(), set()
    while True:
        running = [p for p, _ in processes if p.poll() is None]
        for job, run in zip(jobs, runs, strict=True):
            if run not in reported and (run / "metrics.json").is_file():
                reported.add(run)
                record = json.loads((run / "metrics.json").read_text())
                metric = PRIMARY[job.task]
                log.info(
                    f"  [{len(reported)}/{len(jobs)}] {job.task} {job.ticket} ({job.init}, seed "
                    f"{job.train.seed}): {metric} {record['metrics'][metric]:.4f}, chance "
                    f"{record['chance'][metric]:.4f} ({time.perf_counter() - began:.0f} s)"
                )
        if not running:
            break
        time.sleep(2)
    failed = [log_path for process, log_path in processes if process.returncode != 0]
    if failed:
        tail = "\n".join(failed[0].read_text().splitlines()[-20:])
        raise RuntimeError(f"{label}: fine-tune worker failed, see {failed[0]}:\n{tail}")
    return runs


def launch_ranks(arguments: list[str], ranks: int, what: str) -> None:
    """``lottery <arguments>`` on `ranks` ranks under the `deepspeed` launcher of this interpreter's
    environment (whatever PATH says), each rank with its share of the cores; a failure names `what`.

    The ranks meet on a free port, not the launcher's default 29500: two drivers on one node (two
    studies, or a study beside a user's own job) would otherwise join each other's process group.
    """
    from lottery.dist import free_port

    command = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        str(ranks),
        "--master_port",
        str(free_port()),
        "--module",
        "lottery",
    ]
    log.info(f"{what} on {ranks} rank(s): deepspeed ... lottery {' '.join(arguments)}")
    threads = worker_threads(os.cpu_count(), ranks)
    if subprocess.run([*command, *arguments], env=worker_env(threads)).returncode != 0:
        raise RuntimeError(f"{what} failed (its output is above); rerun the same command to continue it")


def prepare_task_inputs(theta0: PretrainConfig, jobs: list[FinetuneConfig]) -> None:
    """Build what every fine-tune reads (the model directory, each task's dataset) before the workers
    start: two workers building the same directory at once would collide."""
    from lottery.data.task_sets import write_task
    from lottery.train.assets import ensure_data, ensure_model

    scenes = ensure_data(theta0.data)
    ensure_model(theta0.model, scenes)
    for task, seed in dict.fromkeys((job.task, job.data.seed) for job in jobs):
        write_task(task, scenes, seed=seed)
