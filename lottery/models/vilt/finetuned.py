"""A fine-tuned ViLT directory: the ViltConfig, ``vilt.*`` + ``head.*`` weights, task.json, tokenizer
(the layout of `lottery.models.hf_finetuned`)."""

from __future__ import annotations

from pathlib import Path

from lottery.models.hf_finetuned import from_finetuned as _from_finetuned
from lottery.models.hf_finetuned import save_finetuned
from lottery.models.vilt.checkpoint import load_config
from lottery.models.vilt.task_model import ViltForTask

__all__ = ["from_finetuned", "save_finetuned"]


def from_finetuned(model_dir: str | Path) -> ViltForTask:
    """The task model of a fine-tuned ViLT directory; every missing or unexpected tensor is an error."""
    return _from_finetuned(model_dir, load_config, ViltForTask)
