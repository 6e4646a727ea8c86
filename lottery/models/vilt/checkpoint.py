"""A ViLT model directory: transformers' own `save_pretrained` layout (`lottery.models.hf_directory`).

A downloaded `dandelin/vilt-b32-mlm` (a `ViltForMaskedLM`) loads here strictly, except for the
image-text matching head its conversion dropped, which is drawn and reported; ours open with stock
`ViltForMaskedLM` and `AutoModel` (transformers maps no ViLT to `AutoModelForMaskedLM`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from transformers import ViltConfig

from lottery.data.patches import PatchGrid
from lottery.models.hf_directory import (
    load_hf_config,
    load_hf_pretrained,
    save_hf_pretrained,
    write_hf_model_files,
)
from lottery.models.vilt.modeling import ViltForLotteryPretraining, patch_grid

MODEL_TYPE = "vilt"
# The heads transformers' ViltForMaskedLM checkpoints do not ship; drawn when a directory lacks them.
DRAWN_IF_MISSING = (r"itm_score\..*",)


def load_config(model_dir: str | Path) -> ViltConfig:
    """The ViltConfig of a model directory, without its weights; names the file that is wrong."""
    config = load_hf_config(model_dir, ViltConfig, MODEL_TYPE, "a ViLT")
    patch_grid(config)  # an image size that is not a multiple of the patch size fails here, by name
    return config


def write_model_files(
    model: ViltForLotteryPretraining, directory: Path, extra_files: Mapping[str, Path] | None = None
) -> None:
    """Fill the empty `directory` (a partial one from `files.atomic_directory`) with the model's files."""
    write_hf_model_files(model, directory, extra_files)


def save_pretrained(
    model: ViltForLotteryPretraining, out_dir: str | Path, extra_files: Mapping[str, Path] | None = None
) -> Path:
    """Write `model` as the new model directory `out_dir` (never over an existing one)."""
    return save_hf_pretrained(model, out_dir, extra_files)


def from_pretrained(model_dir: str | Path) -> ViltForLotteryPretraining:
    """Load a `save_pretrained` directory, ours or transformers'; every tensor but `itm_score` must be there."""
    return load_hf_pretrained(
        model_dir, ViltForLotteryPretraining, load_config(model_dir), may_lack=DRAWN_IF_MISSING
    )


def model_grid(model_dir: str | Path) -> PatchGrid:
    """The patch grid the model reads: what the data pipeline must cut its images into."""
    return patch_grid(load_config(model_dir))


def input_sizes(model_dir: str | Path) -> tuple[int, int]:
    """(the size of one patch's pixels, 0 detector classes): a patch model reads no detector."""
    return model_grid(model_dir).feat_dim, 0


def skeleton(model_dir: str | Path) -> ViltForLotteryPretraining:
    """The pre-training model of a directory from its config.json alone (drawn weights, for shapes and names)."""
    return ViltForLotteryPretraining(load_config(model_dir))
