"""The configs of a study that runs a grid of fine-tunes: the pipeline's (and the checks it shares
with ``lottery reproduce``'s, lottery/study/config.py). Part of lottery.config, which re-exports it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from lottery.config_checks import NonNegativeInt, Overrides, PositiveInt, one_of
from lottery.config_loader import ConfigError
from lottery.data.examples import TASK_NAMES

Task = Annotated[str, one_of(*TASK_NAMES)]
BASELINES = ("random", "bert", "shuffled")
Baseline = Annotated[str, one_of(*BASELINES)]


def check_grid(
    tasks: Sequence[str],
    task_overrides: Mapping[str, object],
    baselines: Sequence[str],
    ranks: int,
    workers: int,
) -> None:
    """The checks a study of fine-tunes (the pipeline's, `lottery reproduce`'s) needs before it starts."""
    unknown = [t for t in (*tasks, *task_overrides) if t not in TASK_NAMES]
    if unknown:
        raise ConfigError(f"tasks: {', '.join(map(repr, unknown))} not among {', '.join(TASK_NAMES)}")
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise ConfigError(f"baselines: {', '.join(map(repr, bad))} not among {', '.join(BASELINES)}")
    if ranks < 1 or workers < 0:
        raise ConfigError(f"ranks must be >= 1 and workers >= 0 (0: one per GPU) (got {ranks}, {workers})")


AUTO_WORKERS = 0  # `workers=0`: one fine-tune worker per visible GPU (two on a CPU-only machine)


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline runs. ``finetune_overrides`` apply to every fine-tune, then ``task_overrides[task]``
    to that task's. ``baselines`` adds the paper's Table 1 rows at the sparsest published ticket, on
    every task: ``random`` (a seeded random ticket of that sparsity, cut from theta0 and stored as
    ``<alias>-random``), ``bert`` and ``shuffled`` (the IMP ticket on theta0' and theta0'').
    ``workers`` = 0 (the default) is one fine-tune worker per visible GPU, or 2 without a GPU."""

    imp: str = "imp-uniter-mini"
    imp_overrides: Overrides = ()
    ranks: PositiveInt = 2
    workers: NonNegativeInt = AUTO_WORKERS
    tasks: tuple[Task, ...] = TASK_NAMES
    finetune: str = ""
    finetune_overrides: Overrides = ()
    task_overrides: dict[Task, Overrides] = field(default_factory=dict)
    baselines: tuple[Baseline, ...] = ()
    report_dir: str = "runs/report"
