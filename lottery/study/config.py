"""What ``lottery reproduce`` runs: one config for theta0 seeds, the IMP runs and every fine-tune."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from lottery.config import AUTO_WORKERS, BASELINES, DEFAULT_SCHEDULE, ConfigError, Task, check_grid
from lottery.config_checks import NonNegativeInt, Overrides, PositiveInt, Range, Sparsity
from lottery.config_grid import Baseline
from lottery.data.examples import TASK_NAMES

UNIVERSAL_SPARSITIES = (0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class ReproduceConfig:
    """The study's budgets and grid.

    ``imp`` names the IMP config of the universal run; its theta0 (with ``theta0_overrides`` given in
    ``imp_overrides``) is the study's theta0, built on every seed of ``theta0_seeds`` for the criteria
    table, while the IMP runs and fine-tunes start from its seed as configured. ``imp_overrides`` apply to
    every IMP run, ``task_imp_overrides`` to the task-specific ones only (a round there is a fine-tune of
    the task under the round's mask: give it the fine-tunes' budget). Every IMP run prunes along
    ``schedule``, which must hold ``universal`` and ``transfer_sparsity``. ``seeds`` are the fine-tunes'
    ``train.seed`` values (the std of every table is over them); the transfer matrix runs the first
    ``transfer_seeds`` of them. Table 1 takes, per task, the highest sparsity whose IMP round kept
    ``keep`` of the dense round's score. ``finetune_overrides`` apply to every fine-tune, then
    ``task_overrides[task]``; ``family`` prefixes every published alias.
    """

    imp: str = "imp-uniter-mini"
    imp_overrides: Overrides = ()
    task_imp_overrides: Overrides = ()
    schedule: tuple[Sparsity, ...] = DEFAULT_SCHEDULE
    theta0_seeds: tuple[NonNegativeInt, ...] = (0, 1, 2)
    seeds: tuple[NonNegativeInt, ...] = (0, 1, 2)
    transfer_seeds: PositiveInt = 1
    tasks: tuple[Task, ...] = TASK_NAMES
    universal: tuple[Sparsity, ...] = UNIVERSAL_SPARSITIES
    transfer_sparsity: Sparsity = 0.7
    keep: Annotated[float, Range(gt=0, le=1)] = 0.99
    baselines: tuple[Baseline, ...] = BASELINES
    finetune_overrides: Overrides = ()
    task_overrides: dict[Task, Overrides] = field(default_factory=dict)
    ranks: PositiveInt = 2
    workers: NonNegativeInt = AUTO_WORKERS
    family: str = "uniter-mini"

    def __post_init__(self) -> None:
        check_grid(self.tasks, self.task_overrides, self.baselines, self.ranks, self.workers)
        planned = {round(s, 4) for s in self.schedule}
        missing = [s for s in (*self.universal, self.transfer_sparsity) if round(s, 4) not in planned]
        if missing:
            raise ConfigError(
                f"schedule {list(self.schedule)} lacks {sorted(set(missing))}: every IMP run prunes along "
                "it, so it must hold the universal sparsities and transfer_sparsity"
            )
        if not self.seeds or not self.theta0_seeds or not self.tasks:
            raise ConfigError("seeds, theta0_seeds and tasks must each name at least one")
        if not 1 <= self.transfer_seeds <= len(self.seeds):
            raise ConfigError(f"transfer_seeds must be in 1..{len(self.seeds)} (got {self.transfer_seeds})")
        if not 0 < self.keep <= 1:
            raise ConfigError(f"keep must be in (0, 1] (got {self.keep})")
