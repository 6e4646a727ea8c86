"""``lottery reproduce``: run what the study is missing, stage by stage, then write its tables.

theta0 on every seed -> the universal IMP run -> one IMP run per task (its rounds are fine-tunes of the
task under each round's mask) -> Table 1's sparsity per task (`plan.choose`) -> the random tickets
there -> the fine-tune grid on side-by-side workers (`lottery.train.workers`) -> Tables 1, 2 and the
transfer matrix (`lottery.study.tables`). Each stage is skipped when done (theta0 and IMP runs by their
DONE, fine-tunes by theirs), so the same command continues a study that was stopped anywhere.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from lottery.config import ConfigError, ImpConfig, PretrainConfig, load_config
from lottery.files import write_text_atomic
from lottery.study import plan
from lottery.study.config import ReproduceConfig

log = logging.getLogger("lottery.study.run")


def _say(text: str) -> None:
    log.info(f"reproduce: {text}")


def _theta0_stage(config: ReproduceConfig, out: Path) -> list[Path]:
    from lottery.train.theta0 import is_done, theta0_dir
    from lottery.train.workers import launch_ranks

    theta0 = plan.theta0_plan(config, out)
    directories = [theta0_dir(seeded) for _, seeded in theta0.seeded]
    if all(is_done(d) for d in directories):
        _say(f"theta0 on seeds {list(config.theta0_seeds)}: done before")
    else:
        seeds = [str(seed) for seed in config.theta0_seeds]
        # the overrides before --seeds: its nargs="+" would take them for seeds
        arguments = ["theta0", "--config", theta0.name, *theta0.overrides, "--seeds", *seeds]
        launch_ranks(arguments, config.ranks, "theta0")
    return directories


def _imp_stage(config: ReproduceConfig, out: Path, source: str) -> Path:
    from lottery.imp.state import planned_run_dir
    from lottery.run_record import is_done
    from lottery.train.workers import launch_ranks

    run_dir = planned_run_dir(plan.imp_config(config, out, source))
    if is_done(run_dir):
        _say(f"IMP on {source}: done before ({run_dir})")
    else:
        arguments = ["imp", "--config", config.imp, *plan.imp_overrides(config, out, source)]
        launch_ranks(arguments, config.ranks, f"reproduce: IMP on {source}")
    return run_dir


def _choose(config: ReproduceConfig, out: Path, task_runs: dict[str, Path]) -> dict[str, plan.Choice]:
    choices = {task: plan.choose(plan.round_scores(run), config.keep) for task, run in task_runs.items()}
    plan.write_choices(out, choices)
    for task, choice in choices.items():
        kept = "" if choice.kept else f" (no round kept {config.keep:.0%} of dense: the lowest is taken)"
        _say(f"Table 1 sparsity of {task}: {choice.sparsity:.0%}{kept}")
    return choices


def _random_tickets(config: ReproduceConfig, out: Path, universal: ImpConfig, sparsities: set[float]) -> None:
    """A seeded random ticket of theta0 at each of Table 1's sparsities (the same scope and layout)."""
    if "random" not in config.baselines:
        return
    from lottery.imp.run import prepare
    from lottery.tickets import TicketStore
    from lottery.tickets.jobs import cut_ticket

    store = TicketStore(plan.store_dir(out))
    model = None
    for sparsity in sorted(sparsities):
        name = plan.alias(config, "random", sparsity)
        if store.current(name) is None:
            model = model or prepare(universal).theta0_model
            ticket = cut_ticket(model, "random", sparsity, store, seed=universal.imp.seed, alias=name)
            _say(f"random ticket {name} -> {ticket[:12]}")


def _prepare_inputs(universal: ImpConfig, jobs: list) -> None:
    """Each task's dataset and the model directory, built before the workers start (no two at once)."""
    from lottery.train.workers import prepare_task_inputs

    prepare_task_inputs(
        load_config(universal.theta0, list(universal.theta0_overrides), cls=PretrainConfig), jobs
    )


def _notes(
    config: ReproduceConfig, theta0_dirs: list[Path], choices: dict[str, plan.Choice], seconds: float
) -> list[str]:
    from lottery.train.theta0 import seed_summary

    lines = [
        f"Made by `lottery reproduce` in {seconds / 60:.1f} min of this run (stages done before are not counted); "
        f"fine-tune seeds {list(config.seeds)}, theta0 seeds {list(config.theta0_seeds)}.",
        "",
        f"### theta0 on seeds {list(config.theta0_seeds)}",
        "",
        "```",
        seed_summary(theta0_dirs),
        "```",
        "",
        "### Each task's IMP rounds (one seed): the primary score per sparsity, and Table 1's choice",
        "",
        "| task | " + " | ".join(f"{s:.0%}" for s in (0.0, *config.schedule)) + " | chosen |",
        "| --- " * (len(config.schedule) + 3) + "|",
    ]
    for task, choice in choices.items():
        scores = [choice.rounds.get(round(s, 4)) for s in (0.0, *config.schedule)]
        cells = ["-" if v is None else f"{v:.3f}" for v in scores]
        chosen = f"{choice.sparsity:.0%}" + ("" if choice.kept else " (none kept)")
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {chosen} |")
    return lines


def reproduce(config: ReproduceConfig, out: Path, argv: list[str]) -> Path:
    """The driver; `argv` re-creates this config in a fine-tune worker. Returns the study's Markdown."""
    from lottery.report.collect import collect
    from lottery.study.render import write_tables
    from lottery.train.workers import finetune_worker_count, run_finetune_workers, visible_gpu_count

    began = time.perf_counter()
    gpu_count = visible_gpu_count()
    workers = finetune_worker_count(config.workers, gpu_count, os.environ.get("CUDA_VISIBLE_DEVICES"))
    out.mkdir(parents=True, exist_ok=True)
    from lottery.config_loader import to_yaml

    write_text_atomic(out / "reproduce.yaml", to_yaml(config))
    theta0_dirs = _theta0_stage(config, out)
    universal = plan.imp_config(config, out, plan.PRETRAIN)
    _imp_stage(config, out, plan.PRETRAIN)
    task_runs = {task: _imp_stage(config, out, task) for task in config.tasks}
    choices = _choose(config, out, task_runs)
    _random_tickets(config, out, universal, {c.sparsity for c in choices.values()})
    jobs = plan.finetune_jobs(config, out, choices)
    _prepare_inputs(universal, jobs)
    worker = [sys.executable, "-m", "lottery", "reproduce", *argv]
    runs = run_finetune_workers(worker, jobs, workers, gpu_count, out / "logs", "reproduce")
    notes = _notes(config, theta0_dirs, choices, time.perf_counter() - began)
    sources = plan.imp_sources(config)
    chosen = {task: c.sparsity for task, c in choices.items()}
    path = write_tables(
        collect(runs), chosen, config.universal, config.transfer_sparsity, sources, out, notes
    )
    _say(f"done in {time.perf_counter() - began:.0f} s; tables in {path}")
    return path


def run_worker(config: ReproduceConfig, out: Path, part: tuple[int, int]) -> None:
    """One worker's share of the fine-tune grid (a single-rank job); the driver wrote the choices."""
    from lottery.train.sweep import sweep

    choices = plan.read_choices(out)
    if not choices:
        raise ConfigError(f"{out / plan.CHOICES}: missing; a worker runs only under `lottery reproduce`")
    sweep(plan.finetune_jobs(config, out, choices), part)
