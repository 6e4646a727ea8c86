"""``lottery pipeline``: the universal-ticket study on one command, each stage resumable.

theta0 (built once) -> IMP on the pre-training tasks under DeepSpeed on ``ranks`` ranks -> the tickets
the IMP config publishes (60% / 70% by default) -> every published ticket and the dense model
fine-tuned on every task -> the report (table printed, CSV and PNGs written).

The fine-tunes run side by side as ``workers`` single-rank processes, each with its share of the cores:
on CPU ranks, a data-parallel step's gradient all-reduce costs more than a small batch's compute
(measured: 2 ranks x 8 examples ran 1.45 steps/s, one process with both cores 3.2 steps/s at 16), so
independent jobs beat one job on many ranks. On a GPU node each worker drives a GPU of its own
(:func:`finetune_worker_envs`), and ``workers=0`` starts one per visible GPU (:func:`finetune_worker_count`).
On a cluster the same stages are separate commands (``lottery imp`` under srun, ``lottery sweep --part
I/N`` as a job array, ``lottery report``); this driver is for one machine. Rerunning the command skips what is done: finished IMP rounds, fine-tunes
with a metrics.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from lottery.config import (
    AUTO_WORKERS,
    BASELINES,
    ConfigError,
    FinetuneConfig,
    ImpConfig,
    PipelineConfig,
    load_config,
)
from lottery.data.examples import TASK_NAMES
from lottery.train.finetune_configs import task_config

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


def check_config(config: PipelineConfig) -> None:
    unknown = [t for t in (*config.tasks, *config.task_overrides) if t not in TASK_NAMES]
    if unknown:
        raise ConfigError(f"tasks: {', '.join(map(repr, unknown))} not among {', '.join(TASK_NAMES)}")
    bad = [b for b in config.baselines if b not in BASELINES]
    if bad:
        raise ConfigError(f"baselines: {', '.join(map(repr, bad))} not among {', '.join(BASELINES)}")
    if config.ranks < 1 or config.workers < 0:
        raise ConfigError(
            f"ranks must be >= 1 and workers >= 0 (0: one per GPU) (got {config.ranks}, {config.workers})"
        )


def imp_config(config: PipelineConfig) -> ImpConfig:
    return load_config(config.imp, list(config.imp_overrides), cls=ImpConfig)


def finetune_jobs(config: PipelineConfig) -> list[FinetuneConfig]:
    """Dense and every published ticket (sparsity order) x every task, on the IMP run's theta0 and store."""
    imp = imp_config(config)
    tickets = ["dense", *(alias for _, alias in sorted(imp.imp.publish.items()))]
    sparsest = tickets[-1]
    extra = [(f"{sparsest}-random", "theta0")] if "random" in config.baselines else []
    extra += [(sparsest, init) for init in ("bert", "shuffled") if init in config.baselines]
    if extra and sparsest == "dense":
        raise ConfigError("baselines need a published ticket (the IMP config's imp.publish is empty)")
    jobs = []
    for task in config.tasks:
        overrides = [*config.finetune_overrides, *config.task_overrides.get(task, ())]
        base = task_config(task, config.finetune or None, overrides)
        base = replace(
            base,
            theta0=imp.theta0,
            theta0_overrides=imp.theta0_overrides,
            store=imp.imp.store,
            save_model=False,
        )
        jobs += [replace(base, ticket=ticket) for ticket in tickets]
        jobs += [replace(base, ticket=ticket, init=init) for ticket, init in extra]
    return jobs


def _prepare_shared_inputs(config: PipelineConfig, jobs: list[FinetuneConfig]) -> None:
    """Build what every fine-tune reads (the model directory, each task's dataset) before the workers
    start: two workers building the same directory at once would collide."""
    from lottery.data.task_sets import write_task
    from lottery.train.assets import ensure_data, ensure_model

    imp = imp_config(config)
    theta0 = load_config(imp.theta0, list(imp.theta0_overrides))
    scenes = ensure_data(theta0.data)
    ensure_model(theta0.model, scenes)
    for task, seed in dict.fromkeys((job.task, job.data.seed) for job in jobs):
        write_task(task, scenes, seed=seed)


def _cut_random_baseline(config: PipelineConfig) -> None:
    """The random ticket of the sparsest published one's sparsity, from theta0 (same scope and layout)."""
    from lottery.imp.run import prepare
    from lottery.tickets import TicketStore, default_root
    from lottery.tickets.jobs import cut_ticket

    imp = imp_config(config)
    sparsity, alias = max(imp.imp.publish.items())
    store = TicketStore(imp.imp.store or default_root())
    ticket = cut_ticket(
        prepare(imp).theta0_model, "random", sparsity, store, seed=imp.imp.seed, alias=f"{alias}-random"
    )
    print(f"pipeline: random baseline {alias}-random -> {ticket[:12]} ({sparsity:.0%})", flush=True)


def _worker_env(threads: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
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
    """Each fine-tune worker's environment: a job of its own (:func:`_worker_env`), and on a GPU node
    ``CUDA_VISIBLE_DEVICES`` = the i-th GPU the driver sees, so worker i drives that GPU as its
    ``cuda:0`` instead of every worker piling onto the driver's first GPU. Without a GPU, the
    environment is the driver's, as it always was. ``workers`` <= ``gpu_count`` is
    :func:`finetune_worker_count`'s to enforce.
    """
    base = _worker_env(threads, environ)
    if not gpu_count:
        return [dict(base) for _ in range(workers)]
    gpus = visible_gpu_ids(environ, gpu_count)
    return [{**base, "CUDA_VISIBLE_DEVICES": gpus[index]} for index in range(workers)]


def _visible_gpu_count() -> int:
    """The GPUs this process sees (0 on a CPU-only build or machine); torch is imported only here."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _run_imp(config: PipelineConfig) -> None:
    arguments = [
        "--num_gpus",
        str(config.ranks),
        "--module",
        "lottery",
        "imp",
        "--config",
        config.imp,
        *config.imp_overrides,
    ]
    print(f"pipeline: IMP on {config.ranks} rank(s): deepspeed {' '.join(arguments)}", flush=True)
    # the `deepspeed` launcher of this interpreter's environment, whatever PATH says
    command = [sys.executable, "-m", "deepspeed.launcher.runner", *arguments]
    threads = worker_threads(os.cpu_count(), config.ranks)
    if subprocess.run(command, env=_worker_env(threads)).returncode != 0:
        raise RuntimeError("pipeline: the IMP stage failed (its output is above); rerun to continue it")


def _run_finetunes(
    config: PipelineConfig, argv: list[str], jobs: list[FinetuneConfig], workers: int, gpu_count: int
) -> list[Path]:
    """Start the workers, print each job as it finishes, return the run directories."""
    from lottery.report.collect import PRIMARY
    from lottery.train.finetune import run_dir_for
    from lottery.train.sweep import resolve_tickets

    runs = [run_dir_for(job) for job in resolve_tickets(jobs)]
    logs = Path(config.report_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = worker_threads(os.cpu_count(), workers)
    envs = finetune_worker_envs(os.environ, gpu_count, workers, threads)
    processes = []
    for index, env in enumerate(envs):
        log = logs / f"finetune-part{index}.log"
        command = [sys.executable, "-m", "lottery", "pipeline", *argv, "--part", f"{index}/{workers}"]
        processes.append(
            (subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT), log)
        )
    on_gpus = f", GPUs {', '.join(env['CUDA_VISIBLE_DEVICES'] for env in envs)}" if gpu_count else ""
    print(
        f"pipeline: {len(jobs)} fine-tunes on {workers} worker(s) x {threads} thread(s){on_gpus}; "
        f"logs in {logs}/",
        flush=True,
    )
    began, reported = time.perf_counter(), set()
    while True:
        running = [p for p, _ in processes if p.poll() is None]
        for job, run in zip(jobs, runs, strict=True):
            if run not in reported and (run / "metrics.json").is_file():
                reported.add(run)
                record = json.loads((run / "metrics.json").read_text())
                metric = PRIMARY[job.task]
                print(
                    f"  [{len(reported)}/{len(jobs)}] {job.task} {job.ticket} ({job.init}): "
                    f"{metric} {record['metrics'][metric]:.4f}, chance {record['chance'][metric]:.4f} "
                    f"({time.perf_counter() - began:.0f} s)",
                    flush=True,
                )
        if not running:
            break
        time.sleep(2)
    failed = [log for process, log in processes if process.returncode != 0]
    if failed:
        tail = "\n".join(failed[0].read_text().splitlines()[-20:])
        raise RuntimeError(f"pipeline: fine-tune worker failed, see {failed[0]}:\n{tail}")
    return runs


def run_pipeline(config: PipelineConfig, argv: list[str]) -> Path:
    """The driver: IMP, fine-tunes, report. `argv` re-creates this config in a worker process."""
    from lottery.report.collect import collect
    from lottery.report.render import write_report

    check_config(config)
    # the fine-tune workers are checked against the GPUs now, not after IMP has run
    gpu_count = _visible_gpu_count()
    workers = finetune_worker_count(config.workers, gpu_count, os.environ.get("CUDA_VISIBLE_DEVICES"))
    began = time.perf_counter()
    _run_imp(config)
    jobs = finetune_jobs(config)
    _prepare_shared_inputs(config, jobs)
    if "random" in config.baselines:
        _cut_random_baseline(config)
    runs = _run_finetunes(config, argv, jobs, workers, gpu_count)
    path = write_report(collect(runs), Path(config.report_dir))
    print(path.read_text(), end="")
    print(f"pipeline done in {time.perf_counter() - began:.0f} s; report in {path.parent}", flush=True)
    return path


def run_worker(config: PipelineConfig, part: tuple[int, int]) -> None:
    """One worker's share of the fine-tunes (a single-rank job)."""
    from lottery.train.sweep import sweep

    sweep(finetune_jobs(config), part)
