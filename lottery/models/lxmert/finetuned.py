"""A fine-tuned LXMERT directory: the LxmertConfig, ``lxmert.*`` + ``head.*`` weights, task.json, tokenizer
(the layout of `lottery.models.hf_finetuned`)."""

from __future__ import annotations

from pathlib import Path

from lottery.models.hf_finetuned import from_finetuned as _from_finetuned
from lottery.models.hf_finetuned import save_finetuned
from lottery.models.lxmert.checkpoint import load_config
from lottery.models.lxmert.task_model import LxmertForTask

__all__ = ["from_finetuned", "save_finetuned"]


def from_finetuned(model_dir: str | Path) -> LxmertForTask:
    """The task model of a fine-tuned LXMERT directory; every missing or unexpected tensor is an error."""
    return _from_finetuned(model_dir, load_config, LxmertForTask)
