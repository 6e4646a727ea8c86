"""A fine-tuned directory of a family built on transformers' classes (LXMERT, ViLT).

The same layout as UNITER's (models/uniter/finetuned.py: the backbone under its pre-training names +
``head.*`` weights, the head described in task.json, the tokenizer, written into a partial directory
the caller renames into place), with the family's transformers config as config.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lottery.models.uniter.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelDirError,
    key_problems,
    read_weights,
)
from lottery.models.uniter.finetuned import TaskHead, task_head, write_task_file


def save_finetuned(
    state: Mapping[str, torch.Tensor],
    config: Any,
    head: TaskHead,
    partial: Path,
    extra_files: Mapping[str, Path] | None = None,
) -> Path:
    """Fill the empty directory `partial` with a fine-tuned model (`state`: the task model's, on CPU)."""
    partial = Path(partial)
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(partial / WEIGHTS_FILE),
        metadata={"format": "pt", "task": head.task},
    )
    (partial / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    write_task_file(partial, head, extra_files)
    return partial


def from_finetuned(
    model_dir: str | Path, load_config: Callable[[Path], Any], task_model: Callable[..., torch.nn.Module]
) -> torch.nn.Module:
    """The task model of a fine-tuned directory; every missing or unexpected tensor is an error."""
    model_dir = Path(model_dir)
    head = task_head(model_dir)
    if head is None:
        raise ModelDirError(f"{model_dir} is not a fine-tuned model directory (no task.json)")
    config = load_config(model_dir)
    model = task_model(config, head.task, num_outputs=head.num_outputs)
    tensors = read_weights(model_dir)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    problems = "; ".join(key_problems(tensors, expected, listed=5))
    if problems:
        raise ModelDirError(
            f"{model_dir / WEIGHTS_FILE} does not fit a {head.task} {config.model_type} model: {problems}"
        )
    model.load_state_dict(tensors)
    return model
