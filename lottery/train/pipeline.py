"""``lottery pipeline``: the universal-ticket study on one command, each stage resumable.

theta0 (built once) -> IMP on the pre-training tasks under DeepSpeed on ``ranks`` ranks -> the tickets
the IMP config publishes (60% / 70% by default) -> every published ticket and the dense model
fine-tuned on every task -> the report (table printed, CSV and PNGs written).

The fine-tunes run side by side as ``workers`` single-rank processes (`lottery.train.workers`).
On a cluster the same stages are separate commands (``lottery imp`` under srun, ``lottery sweep --part
I/N`` as a job array, ``lottery report``); this driver is for one machine. Rerunning the command skips
what is done: finished IMP rounds, fine-tunes with a metrics.json. The model family is the IMP config's
(``imp: imp-lxmert-mini``, ``imp-vilt-mini``), and ``tasks`` may only name the tasks it has a head for.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from lottery.config import (
    ConfigError,
    FinetuneConfig,
    ImpConfig,
    PipelineConfig,
    PretrainConfig,
    check_grid,
    load_config,
)
from lottery.train.finetune_configs import task_config
from lottery.train.workers import (
    finetune_worker_count,
    launch_ranks,
    prepare_task_inputs,
    run_finetune_workers,
    visible_gpu_count,
)

log = logging.getLogger("lottery.train.pipeline")


def check_config(config: PipelineConfig, imp: ImpConfig | None = None) -> None:
    """Before any stage runs: the grid, and that the IMP config's family has a head for every task.

    `imp`: the IMP stage's config when the caller has loaded it already (`run_pipeline` loads it once).
    """
    from lottery.models.families import FAMILIES

    check_grid(config.tasks, config.task_overrides, config.baselines, config.ranks, config.workers)
    imp = imp or imp_config(config)
    family = theta0_config(imp).model.family
    lacking = [task for task in config.tasks if task not in FAMILIES[family].finetune_tasks]
    if lacking:
        raise ConfigError(
            f"tasks: {family} ({config.imp}) has no head for {lacking}; its tasks are "
            f"{list(FAMILIES[family].finetune_tasks)}"
        )


def imp_config(config: PipelineConfig) -> ImpConfig:
    return load_config(config.imp, list(config.imp_overrides), cls=ImpConfig)


def theta0_config(imp: ImpConfig) -> PretrainConfig:
    """The config of the theta0 the IMP stage starts from (and the fine-tunes read their data from)."""
    return load_config(imp.theta0, list(imp.theta0_overrides))


def finetune_jobs(config: PipelineConfig, imp: ImpConfig | None = None) -> list[FinetuneConfig]:
    """Dense and every published ticket (sparsity order) x every task, on the IMP run's theta0 and store."""
    imp = imp or imp_config(config)
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


def _cut_random_baseline(imp: ImpConfig) -> None:
    """The random ticket of the sparsest published one's sparsity, from theta0 (same scope and layout)."""
    from lottery.imp.run import prepare
    from lottery.tickets import TicketStore, default_root
    from lottery.tickets.jobs import cut_ticket

    sparsity, alias = max(imp.imp.publish.items())
    store = TicketStore(imp.imp.store or default_root())
    ticket = cut_ticket(
        prepare(imp).theta0_model, "random", sparsity, store, seed=imp.imp.seed, alias=f"{alias}-random"
    )
    log.info(f"pipeline: random baseline {alias}-random -> {ticket[:12]} ({sparsity:.0%})")


def _run_imp(config: PipelineConfig) -> None:
    arguments = ["imp", "--config", config.imp, *config.imp_overrides]
    launch_ranks(arguments, config.ranks, "pipeline: the IMP stage")


def run_pipeline(config: PipelineConfig, argv: list[str]) -> Path:
    """The driver: IMP, fine-tunes, report. `argv` re-creates this config in a worker process."""
    from lottery.report.collect import collect
    from lottery.report.render import write_report

    imp = imp_config(config)  # loaded once (YAML and overrides) for every step below
    check_config(config, imp)
    # the fine-tune workers are checked against the GPUs now, not after IMP has run
    gpu_count = visible_gpu_count()
    workers = finetune_worker_count(config.workers, gpu_count, os.environ.get("CUDA_VISIBLE_DEVICES"))
    began = time.perf_counter()
    _run_imp(config)
    jobs = finetune_jobs(config, imp)
    prepare_task_inputs(theta0_config(imp), jobs)
    if "random" in config.baselines:
        _cut_random_baseline(imp)
    worker = [sys.executable, "-m", "lottery", "pipeline", *argv]
    logs = Path(config.report_dir) / "logs"
    runs = run_finetune_workers(worker, jobs, workers, gpu_count, logs, "pipeline")
    path = write_report(collect(runs), Path(config.report_dir))
    print(path.read_text(), end="")
    log.info(f"pipeline done in {time.perf_counter() - began:.0f} s; report in {path.parent}")
    return path


def run_worker(config: PipelineConfig, part: tuple[int, int]) -> None:
    """One worker's share of the fine-tunes (a single-rank job)."""
    from lottery.train.sweep import sweep

    sweep(finetune_jobs(config), part)
