"""An LXMERT model directory: transformers' own `save_pretrained` layout (`lottery.models.hf_directory`).

A downloaded `unc-nlp/lxmert-base-uncased` loads here as it is, strictly; ours open with
`AutoModelForPreTraining`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from transformers import LxmertConfig

from lottery.models.hf_directory import (
    load_hf_config,
    load_hf_pretrained,
    save_hf_pretrained,
    write_hf_model_files,
)
from lottery.models.lxmert.modeling import LxmertForLotteryPretraining

MODEL_TYPE = "lxmert"


def load_config(model_dir: str | Path) -> LxmertConfig:
    """The LxmertConfig of a model directory, without its weights; names the file that is wrong."""
    return load_hf_config(model_dir, LxmertConfig, MODEL_TYPE, "an LXMERT")


def write_model_files(
    model: LxmertForLotteryPretraining, directory: Path, extra_files: Mapping[str, Path] | None = None
) -> None:
    """Fill the empty `directory` (a partial one from `files.atomic_directory`) with the model's files."""
    write_hf_model_files(model, directory, extra_files)


def save_pretrained(
    model: LxmertForLotteryPretraining, out_dir: str | Path, extra_files: Mapping[str, Path] | None = None
) -> Path:
    """Write `model` as the new model directory `out_dir` (never over an existing one)."""
    return save_hf_pretrained(model, out_dir, extra_files)


def from_pretrained(model_dir: str | Path) -> LxmertForLotteryPretraining:
    """Load a `save_pretrained` directory, ours or transformers'; every tensor must be there and fit."""
    return load_hf_pretrained(model_dir, LxmertForLotteryPretraining, load_config(model_dir))


def input_sizes(model_dir: str | Path) -> tuple[int, int]:
    """(region feature size, detector classes) the model reads: what the data must give."""
    config = load_config(model_dir)
    return int(config.visual_feat_dim), int(config.num_object_labels)


def skeleton(model_dir: str | Path) -> LxmertForLotteryPretraining:
    """The pre-training model of a directory from its config.json alone (drawn weights, for shapes and names)."""
    return LxmertForLotteryPretraining(load_config(model_dir))
