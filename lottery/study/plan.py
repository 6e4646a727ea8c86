"""What ``lottery reproduce`` runs, as configs: theta0 seeds, the IMP runs, the fine-tune grid.

Everything a run makes lives under the study's output directory (``runs/imp``, ``runs/finetune``,
``tickets``), except theta0, which is cached by its config's digest and shared with every other job.
Every name is a function of the config and of what finished stages left on disk (Table 1's choice of
sparsity, `choices.json`), so the driver and its fine-tune workers compute the same plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from lottery.config import FinetuneConfig, ImpConfig, PretrainConfig, load_config
from lottery.files import write_json_atomic
from lottery.study.config import ReproduceConfig
from lottery.train.finetune_configs import task_config

CHOICES = "choices.json"
PRETRAIN = "pretrain"  # the universal run's source name, as `lottery.report.collect.Result.source` says it


def percent(sparsity: float) -> int:
    return round(100 * sparsity)


def alias(config: ReproduceConfig, source: str, sparsity: float) -> str:
    """The published name of a ticket: ``<family>/<source>/s<percent>`` (source: a task, pretrain, random)."""
    return f"{config.family}/{source}/s{percent(sparsity)}"


def store_dir(out: Path) -> Path:
    return out / "tickets"


def imp_overrides(config: ReproduceConfig, out: Path, source: str) -> list[str]:
    """The overrides of `lottery imp` for the universal run (``source=pretrain``) or a task's own run.

    Every sparsity of the schedule is published, so Table 1, Table 2 and the transfer matrix can each
    take the ticket they need by name.
    """
    publish = ", ".join(f"{s}: {alias(config, source, s)}" for s in config.schedule)
    overrides = [
        *config.imp_overrides,
        f"runs_dir={out / 'runs' / 'imp'}",
        f"imp.store={store_dir(out)}",
        f"imp.schedule=[{', '.join(str(s) for s in config.schedule)}]",
        f"imp.publish={{{publish}}}",
    ]
    if source != PRETRAIN:
        tuning = [*config.finetune_overrides, *config.task_overrides.get(source, ())]
        # a JSON list is a YAML flow sequence whose strings may hold brackets, commas and quotes
        overrides += [
            *config.task_imp_overrides,
            f"imp.objective={source}",
            f"imp.task_overrides={json.dumps(tuning)}",
        ]
    return overrides


def imp_config(config: ReproduceConfig, out: Path, source: str) -> ImpConfig:
    return load_config(config.imp, imp_overrides(config, out, source), cls=ImpConfig)


def imp_sources(config: ReproduceConfig) -> list[str]:
    """The IMP runs of the study: the universal one first, then one per task (Table 1, transfer)."""
    return [PRETRAIN, *config.tasks]


@dataclass(frozen=True)
class Theta0Plan:
    """The theta0 config (`lottery theta0 --config name overrides`) and one resolved config per seed."""

    name: str
    overrides: tuple[str, ...]
    seeded: tuple[tuple[int, PretrainConfig], ...]


def theta0_plan(config: ReproduceConfig, out: Path) -> Theta0Plan:
    universal = imp_config(config, out, PRETRAIN)
    overrides = tuple(universal.theta0_overrides)
    seeded = tuple(
        (seed, load_config(universal.theta0, [*overrides, f"train.seed={seed}"]))
        for seed in config.theta0_seeds
    )
    return Theta0Plan(universal.theta0, overrides, seeded)


@dataclass(frozen=True)
class Choice:
    """Table 1's sparsity for a task: the highest whose IMP round kept `keep` of the dense round."""

    sparsity: float
    kept: bool  # False: no round kept it, the lowest sparsity is taken and the table says so
    rounds: dict[float, float]  # sparsity -> the round's score (0.0: the dense round)


def choose(rounds: dict[float, float], keep: float) -> Choice:
    dense = rounds[0.0]
    pruned = sorted(s for s in rounds if s > 0)
    if not pruned:
        raise ValueError("an IMP run with no pruned round has no sparsity to choose")
    kept = [s for s in pruned if rounds[s] >= keep * dense]
    return Choice(max(kept), True, rounds) if kept else Choice(pruned[0], False, rounds)


def round_scores(imp_run_dir: Path) -> dict[float, float]:
    """A task IMP run's primary score per round, from each round's fine-tune metrics.json."""
    from lottery.report.collect import collect

    return {round(r.sparsity, 4): r.score for r in collect([imp_run_dir / "rounds"])}


def write_choices(out: Path, choices: dict[str, Choice]) -> Path:
    record = {
        task: {"sparsity": c.sparsity, "kept": c.kept, "rounds": {str(s): v for s, v in c.rounds.items()}}
        for task, c in choices.items()
    }
    return write_json_atomic(out / CHOICES, record)


def read_choices(out: Path) -> dict[str, Choice]:
    path = out / CHOICES
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return {
        task: Choice(
            float(c["sparsity"]), bool(c["kept"]), {float(s): float(v) for s, v in c["rounds"].items()}
        )
        for task, c in record.items()
    }


def _base(config: ReproduceConfig, out: Path, task: str, universal: ImpConfig) -> FinetuneConfig:
    base = task_config(task, None, [*config.finetune_overrides, *config.task_overrides.get(task, ())])
    return replace(
        base,
        runs_dir=str(out / "runs" / "finetune"),
        theta0=universal.theta0,
        theta0_overrides=universal.theta0_overrides,
        store=str(store_dir(out)),
        save_model=False,
    )


def finetune_jobs(config: ReproduceConfig, out: Path, choices: dict[str, Choice]) -> list[FinetuneConfig]:
    """Dense, Table 2, Table 1 (needs `choices`: left out until the task IMP runs chose) and transfer.

    Each (task, ticket, init, seed) once, in that order, so the dense 100% of every table comes first.
    """
    universal = imp_config(config, out, PRETRAIN)
    wanted: list[tuple[str, str, str, int]] = []
    for task in config.tasks:
        for seed in config.seeds:
            wanted.append((task, "dense", "theta0", seed))
            wanted += [(task, alias(config, PRETRAIN, s), "theta0", seed) for s in config.universal]
    for task, choice in choices.items():
        own = alias(config, task, choice.sparsity)
        inits = ["theta0", *(i for i in ("bert", "shuffled") if i in config.baselines)]
        for seed in config.seeds:
            wanted += [(task, own, init, seed) for init in inits]
            if "random" in config.baselines:
                wanted.append((task, alias(config, "random", choice.sparsity), "theta0", seed))
    if choices:
        for source in imp_sources(config):
            ticket = alias(config, source, config.transfer_sparsity)
            for seed in config.seeds[: config.transfer_seeds]:
                wanted += [(target, ticket, "theta0", seed) for target in config.tasks]
    bases = {task: _base(config, out, task, universal) for task in config.tasks}
    return [
        replace(bases[task], ticket=ticket, init=init, train=replace(bases[task].train, seed=seed))
        for task, ticket, init, seed in dict.fromkeys(wanted)
    ]
