"""An LXMERT model directory: transformers' own `save_pretrained` layout (config.json + model.safetensors).

We write and read it with transformers, so a directory is interchangeable with a downloaded
`unc-nlp/lxmert-base-uncased`: ours open with `AutoModelForPreTraining`, and theirs load here. Loading
is strict where transformers only warns: a missing, unexpected or misshapen tensor is a `ModelDirError`
naming the directory (the CLI prints it as one line and exits 2), because a model that silently drew
the weights it lacked would train, and publish tickets, from noise. Directories are written through
`files.atomic_directory`, so a killed job leaves none half-written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import LxmertConfig

from lottery.files import atomic_directory
from lottery.models.lxmert.modeling import LxmertForLotteryPretraining
from lottery.models.uniter.checkpoint import CONFIG_FILE, WEIGHTS_FILE, ModelDirError, check_extra_files

MODEL_TYPE = "lxmert"


def load_config(model_dir: str | Path) -> LxmertConfig:
    """The LxmertConfig of a model directory, without its weights; names the file that is wrong."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(f"{path} is missing: {model_dir} is not an LXMERT model directory")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ModelDirError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("model_type") != MODEL_TYPE:
        found = data.get("model_type") if isinstance(data, dict) else None
        raise ModelDirError(
            f"{path}: model_type is {found!r}, not {MODEL_TYPE!r}: this is not an LXMERT model"
        )
    config = LxmertConfig.from_dict(data)
    if not getattr(config, "name", None):
        config.name = f"lxmert-{Path(model_dir).resolve().name}"  # a downloaded directory has no name
    return config


def write_model_files(
    model: LxmertForLotteryPretraining, directory: Path, extra_files: Mapping[str, Path] | None = None
) -> None:
    """Fill the empty `directory` (a partial one from `files.atomic_directory`) with the model's files."""
    extra_files = dict(extra_files or {})
    check_extra_files(extra_files)
    model.save_pretrained(directory, safe_serialization=True)
    for name, source in extra_files.items():
        shutil.copyfile(source, directory / name)


def save_pretrained(
    model: LxmertForLotteryPretraining, out_dir: str | Path, extra_files: Mapping[str, Path] | None = None
) -> Path:
    """Write `model` as the new model directory `out_dir` (never over an existing one)."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as partial:
        write_model_files(model, partial, extra_files)
    return out_dir


def from_pretrained(model_dir: str | Path) -> LxmertForLotteryPretraining:
    """Load a `save_pretrained` directory, ours or transformers'; every tensor must be there and fit."""
    config = load_config(model_dir)
    if (
        not (Path(model_dir) / WEIGHTS_FILE).is_file()
        and not (Path(model_dir) / "pytorch_model.bin").is_file()
    ):
        raise ModelDirError(f"{Path(model_dir) / WEIGHTS_FILE} is missing; the model directory is incomplete")
    try:
        model, info = LxmertForLotteryPretraining.from_pretrained(
            str(model_dir), config=config, dtype=torch.float32, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelDirError(f"{model_dir}: not a loadable LXMERT model directory: {err}") from err
    problems = [f"missing tensors {sorted(info['missing_keys'])[:5]}"] if info["missing_keys"] else []
    problems += (
        [f"unexpected tensors {sorted(info['unexpected_keys'])[:5]}"] if info["unexpected_keys"] else []
    )
    mismatched = info.get("mismatched_keys") or []
    problems += [f"misshapen tensors {[str(item) for item in mismatched][:5]}"] if mismatched else []
    if problems:
        raise ModelDirError(f"{model_dir} does not match its {CONFIG_FILE}: " + "; ".join(problems))
    return model


def input_sizes(model_dir: str | Path) -> tuple[int, int]:
    """(region feature size, detector classes) the model reads: what the data must give."""
    config = load_config(model_dir)
    return int(config.visual_feat_dim), int(config.num_object_labels)
