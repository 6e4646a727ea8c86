"""Each task's fine-tune settings: UNITER's per-task configs, scaled down to the embedded world.

`lottery/configs/finetune-<task>.yaml` holds what differs from the `FinetuneConfig` defaults for that
task (learning rates, batch, steps, evaluation size), measured on uniter-mini; a task without a file
takes the defaults. An explicit ``--config`` replaces the shipped file, and overrides go on top.
"""

from __future__ import annotations

from collections.abc import Sequence

from lottery.config import CONFIG_DIR, FinetuneConfig, load_config
from lottery.data.examples import TASK_NAMES


def shipped_name(task: str) -> str | None:
    """`finetune-<task>` if that file is shipped ('+' in a task name is spelled 'plus')."""
    name = f"finetune-{task.replace('+', 'plus')}"
    return name if (CONFIG_DIR / f"{name}.yaml").is_file() else None


def task_config(task: str, config: str | None = None, overrides: Sequence[str] = ()) -> FinetuneConfig:
    """The fine-tune config of `task`: `config` (a name or file) or the task's shipped one, then overrides."""
    return load_config(config or shipped_name(task), [f"task={task}", *overrides], cls=FinetuneConfig)


def task_of(name: str) -> str | None:
    """The task whose shipped fine-tune config `name` is (``finetune-refcocoplus`` -> ``refcoco+``), or None."""
    return next((task for task in TASK_NAMES if shipped_name(task) == name), None)
