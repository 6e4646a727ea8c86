"""A fine-tuned model directory: a UNITER model directory whose weights are the backbone plus a task head.

Layout (`lottery finetune` writes it as ``<run>/model/``):

    config.json        the UniterConfig, as in any model directory, so `load_config`, the data checks and
                       `lottery ticket cut --model` read it as they read theta0's; it also names the head
                       (`task`, `num_outputs`) for transformers, whose Auto classes build
                       finetuned_model.UniterWithTaskHead from it
    task.json          what the head is: task, number of outputs, the answer vocabulary its outputs index
    model.safetensors  ``uniter.*`` (the backbone, pre-training names) and ``head.*``
    tokenizer files    copied from the model the fine-tune started from

The directory has no pre-training heads (MLM, ITM, MRFR, MRC), so `from_pretrained` refuses it, naming
`from_finetuned`, which builds the task model back. Directories written before task.json existed
carried ``task`` and ``num_outputs`` in config.json; they still load.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from lottery.models.uniter.checkpoint import (
    CONFIG_FILE,
    LEGACY_TASK_KEYS,
    TASK_FILE,
    WEIGHTS_FILE,
    ModelDirError,
    key_problems,
    load_config,
    read_weights,
)
from lottery.models.uniter.config import UniterConfig
from lottery.models.uniter.finetuned_model import UniterWithTaskHead
from lottery.models.uniter.hf_config import config_json

if TYPE_CHECKING:
    from lottery.tasks.downstream.model import UniterForTask

TASK_FORMAT = "vl-lottery-task-head"


@dataclass(frozen=True)
class TaskHead:
    """What the head of a fine-tuned directory computes: its task, its outputs and what they name."""

    task: str
    num_outputs: int
    answers: tuple[str, ...] = ()


def task_head(model_dir: str | Path) -> TaskHead | None:
    """The head of a fine-tuned directory; None for a pre-training one (no task.json, no task keys)."""
    model_dir = Path(model_dir)
    path = model_dir / TASK_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return TaskHead(str(data["task"]), int(data["num_outputs"]), tuple(data.get("answers", ())))
        except (ValueError, KeyError, TypeError) as err:
            raise ModelDirError(f"{path}: not a task head description ({err})") from None
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        data = json.loads(config_path.read_text())
    except ValueError:
        return None  # load_config names the broken file
    # transformers' own save_pretrained writes `"task": null` for a model without a head
    if isinstance(data, dict) and set(LEGACY_TASK_KEYS) <= set(data) and data["task"] is not None:
        return TaskHead(str(data["task"]), int(data["num_outputs"]))
    return None


def save_finetuned(
    state: Mapping[str, torch.Tensor],
    config: UniterConfig,
    head: TaskHead,
    partial: Path,
    extra_files: Mapping[str, Path] | None = None,
) -> Path:
    """Fill the empty directory `partial` (the caller renames it into place) and return it.

    `state` is the task model's full state dict (``uniter.*`` and ``head.*``, on CPU). Written into a
    directory that is not yet the target, so a killed job never leaves a half-written model.
    """
    partial = Path(partial)
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(partial / WEIGHTS_FILE),
        metadata={"format": "pt", "task": head.task},
    )
    data = config_json(config, UniterWithTaskHead.__name__, task=head.task, num_outputs=head.num_outputs)
    (partial / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")
    write_task_file(partial, head, extra_files)
    return partial


def write_task_file(partial: Path, head: TaskHead, extra_files: Mapping[str, Path] | None = None) -> None:
    """task.json (what the head computes) and the copied files of any family's fine-tuned directory."""
    description = {
        "format": TASK_FORMAT,
        "task": head.task,
        "num_outputs": head.num_outputs,
        "answers": list(head.answers),
    }
    (partial / TASK_FILE).write_text(json.dumps(description, indent=2) + "\n")
    for name, source in (extra_files or {}).items():
        shutil.copyfile(source, partial / name)


def from_finetuned(model_dir: str | Path) -> UniterForTask:
    """The task model of a fine-tuned directory; every missing or unexpected tensor is an error."""
    from lottery.tasks.downstream.model import UniterForTask

    model_dir = Path(model_dir)
    head = task_head(model_dir)
    if head is None:
        raise ModelDirError(
            f"{model_dir} is not a fine-tuned model directory (no {TASK_FILE}); load it with from_pretrained"
        )
    config = load_config(model_dir)
    weights_path = Path(model_dir) / WEIGHTS_FILE
    tensors = read_weights(model_dir)
    model = UniterForTask(config, head.task, num_outputs=head.num_outputs)
    expected = model.state_dict()
    problems = "; ".join(key_problems(tensors, {k: v.shape for k, v in expected.items()}, listed=5))
    if problems:
        raise ModelDirError(f"{weights_path} does not fit a {head.task} model of {config.name!r}: {problems}")
    model.load_state_dict(tensors)
    return model
