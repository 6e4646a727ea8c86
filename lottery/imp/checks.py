"""What `lottery imp` refuses before theta0 is built: the config's own values, a task mix or a downstream
objective the theta0's model family cannot train; and the fine-tune a downstream objective runs."""

from __future__ import annotations

from dataclasses import replace

from lottery.config import FAMILY_TASKS, ConfigError, FinetuneConfig, ImpConfig, PretrainConfig, foreign_tasks
from lottery.data.examples import TASK_NAMES
from lottery.train.finetune_configs import task_config

METHODS = ("imp", "oneshot", "random")
OBJECTIVES = ("pretrain", *TASK_NAMES)


def check_config(config: ImpConfig) -> None:
    imp = config.imp
    if imp.method not in METHODS:
        raise ConfigError(f"imp.method: {imp.method!r} is not one of {', '.join(METHODS)}")
    if imp.objective not in OBJECTIVES:
        raise ConfigError(f"imp.objective: {imp.objective!r} is not one of {', '.join(OBJECTIVES)}")
    schedule = list(imp.schedule)
    if not schedule or any(not 0.0 < s < 1.0 for s in schedule) or schedule != sorted(set(schedule)):
        raise ConfigError(f"imp.schedule: {schedule} must be increasing sparsities in (0, 1)")
    if imp.rewind_step < 0 or imp.rewind_step >= config.train.steps:
        raise ConfigError(
            f"imp.rewind_step: {imp.rewind_step} must be in [0, train.steps={config.train.steps})"
        )
    if imp.objective != "pretrain" and imp.rewind_step:
        raise ConfigError(f"imp.rewind_step: a downstream objective ({imp.objective}) rewinds to theta0 only")
    if imp.early_bird_threshold and not imp.early_bird_every:
        raise ConfigError("imp.early_bird_threshold needs imp.early_bird_every > 0")


def check_family(config: ImpConfig, theta0_config: PretrainConfig) -> None:
    """Refuse, before theta0 is built, what the family of theta0's ``model.family`` cannot train.

    A pre-training round trains theta0's model on ``tasks.mix``, which must name its family's tasks. A
    downstream round is a fine-tune, so the fine-tune's own check judges it (whether the family has the
    task's head), now instead of after theta0's build.
    """
    if config.imp.objective != "pretrain":
        from lottery.train.finetune import check_config as check_finetune

        try:
            check_finetune(downstream_config(config))
        except ConfigError as err:
            raise ConfigError(f"imp.objective: {config.imp.objective}: {err}") from None
        return
    family, known = theta0_config.model.family, FAMILY_TASKS[theta0_config.model.family]
    foreign = foreign_tasks(family, config.tasks.mix)
    if foreign:
        raise ConfigError(
            f"tasks.mix: theta0 {config.theta0} is {family}, which has no task(s) {foreign}; "
            f"its pre-training tasks are {list(known)}"
        )


def downstream_config(config: ImpConfig) -> FinetuneConfig:
    """The fine-tune a downstream objective's rounds run: the task's shipped config from the run's theta0."""
    imp = config.imp
    task = task_config(imp.objective, None, list(imp.task_overrides))
    return replace(task, theta0=config.theta0, theta0_overrides=config.theta0_overrides, init="theta0")
