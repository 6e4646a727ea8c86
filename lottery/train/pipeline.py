"""``lottery pipeline``: the universal-ticket study on one command, each stage resumable.

theta0 (built once) -> IMP on the pre-training tasks under DeepSpeed on ``ranks`` ranks -> the tickets
the IMP config publishes (60% / 70% by default) -> every published ticket and the dense model
fine-tuned on every task -> the report (table printed, CSV and PNGs written).

The fine-tunes run side by side as ``workers`` single-rank processes, each with its share of the cores:
on CPU ranks, a data-parallel step's gradient all-reduce costs more than a small batch's compute
(measured: 2 ranks x 8 examples ran 1.45 steps/s, one process with both cores 3.2 steps/s at 16), so
independent jobs beat one job on many ranks. On a cluster the same stages are separate commands
(``lottery imp`` under srun, ``lottery sweep --part I/N`` as a job array, ``lottery report``); this
driver is for one machine. Rerunning the command skips what is done: finished IMP rounds, fine-tunes
with a metrics.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from lottery.config import ConfigError, FinetuneConfig, ImpConfig, load_config
from lottery.tasks.downstream.examples import TASK_NAMES
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


BASELINES = ("random", "bert", "shuffled")


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline runs. ``finetune_overrides`` apply to every fine-tune, then ``task_overrides[task]``
    to that task's. ``baselines`` adds the paper's Table 1 rows at the sparsest published ticket, on
    every task: ``random`` (a seeded random ticket of that sparsity, cut from theta0 and stored as
    ``<alias>-random``), ``bert`` and ``shuffled`` (the IMP ticket on theta0' and theta0'')."""

    imp: str = "imp-uniter-mini"
    imp_overrides: tuple[str, ...] = ()
    ranks: int = 2
    workers: int = 2
    tasks: tuple[str, ...] = TASK_NAMES
    finetune: str = ""
    finetune_overrides: tuple[str, ...] = ()
    task_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    baselines: tuple[str, ...] = ()
    report_dir: str = "runs/report"


def check_config(config: PipelineConfig) -> None:
    unknown = [t for t in (*config.tasks, *config.task_overrides) if t not in TASK_NAMES]
    if unknown:
        raise ConfigError(f"tasks: {', '.join(map(repr, unknown))} not among {', '.join(TASK_NAMES)}")
    bad = [b for b in config.baselines if b not in BASELINES]
    if bad:
        raise ConfigError(f"baselines: {', '.join(map(repr, bad))} not among {', '.join(BASELINES)}")
    if config.ranks < 1 or config.workers < 1:
        raise ConfigError(f"ranks and workers must be >= 1 (got {config.ranks}, {config.workers})")


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
    from lottery.tasks.downstream.shapes_data import write_task
    from lottery.train.assets import ensure_data, ensure_model

    imp = imp_config(config)
    theta0 = load_config(imp.theta0, list(imp.theta0_overrides))
    scenes = ensure_data(theta0.data)
    ensure_model(theta0.model, scenes)
    for task, seed in dict.fromkeys((job.task, job.data.seed) for job in jobs):
        write_task(task, scenes, seed=seed)


def _cut_random_baseline(config: PipelineConfig) -> None:
    """The random ticket of the sparsest published one's sparsity, from theta0 (same scope and layout)."""
    from lottery.tickets import TicketStore, default_root
    from lottery.train.imp import prepare
    from lottery.train.ticket_jobs import cut_ticket

    imp = imp_config(config)
    sparsity, alias = max(imp.imp.publish.items())
    store = TicketStore(imp.imp.store or default_root())
    ticket = cut_ticket(
        prepare(imp).theta0_model, "random", sparsity, store, seed=imp.imp.seed, alias=f"{alias}-random"
    )
    print(f"pipeline: random baseline {alias}-random -> {ticket[:12]} ({sparsity:.0%})", flush=True)


def _worker_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_KEYS}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


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
    threads = max(1, (os.cpu_count() or 1) // config.ranks)
    if subprocess.run(command, env=_worker_env(threads)).returncode != 0:
        raise RuntimeError("pipeline: the IMP stage failed (its output is above); rerun to continue it")


def _run_finetunes(config: PipelineConfig, argv: list[str], jobs: list[FinetuneConfig]) -> list[Path]:
    """Start the workers, print each job as it finishes, return the run directories."""
    from lottery.report.collect import PRIMARY
    from lottery.train.finetune import run_dir_for
    from lottery.train.sweep import resolve_tickets

    runs = [run_dir_for(job) for job in resolve_tickets(jobs)]
    logs = Path(config.report_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    workers = []
    for index in range(config.workers):
        log = logs / f"finetune-part{index}.log"
        command = [sys.executable, "-m", "lottery", "pipeline", *argv, "--part", f"{index}/{config.workers}"]
        workers.append(
            (
                subprocess.Popen(
                    command, env=_worker_env(threads), stdout=log.open("w"), stderr=subprocess.STDOUT
                ),
                log,
            )
        )
    print(
        f"pipeline: {len(jobs)} fine-tunes on {config.workers} worker(s) x {threads} thread(s); "
        f"logs in {logs}/",
        flush=True,
    )
    began, reported = time.perf_counter(), set()
    while True:
        running = [p for p, _ in workers if p.poll() is None]
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
    failed = [log for process, log in workers if process.returncode != 0]
    if failed:
        tail = "\n".join(failed[0].read_text().splitlines()[-20:])
        raise RuntimeError(f"pipeline: fine-tune worker failed, see {failed[0]}:\n{tail}")
    return runs


def run_pipeline(config: PipelineConfig, argv: list[str]) -> Path:
    """The driver: IMP, fine-tunes, report. `argv` re-creates this config in a worker process."""
    from lottery.report.collect import collect
    from lottery.report.render import write_report

    check_config(config)
    began = time.perf_counter()
    _run_imp(config)
    jobs = finetune_jobs(config)
    _prepare_shared_inputs(config, jobs)
    if "random" in config.baselines:
        _cut_random_baseline(config)
    runs = _run_finetunes(config, argv, jobs)
    path = write_report(collect(runs), Path(config.report_dir))
    print(path.read_text(), end="")
    print(f"pipeline done in {time.perf_counter() - began:.0f} s; report in {path.parent}", flush=True)
    return path


def run_worker(config: PipelineConfig, part: tuple[int, int]) -> None:
    """One worker's share of the fine-tunes (a single-rank job)."""
    from lottery.train.sweep import sweep

    sweep(finetune_jobs(config), part)
