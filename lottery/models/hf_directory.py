"""Model directories of the families built on transformers' own classes (LXMERT, ViLT).

A directory is transformers' `save_pretrained` layout (config.json + model.safetensors, plus the
tokenizer), so it is interchangeable with a downloaded one: ours open with stock transformers, and
theirs load here. Loading is strict where transformers only warns: a missing, unexpected or misshapen
tensor is a `ModelDirError` naming the directory (the CLI prints it as one line and exits 2), because
a model that silently drew the weights it lacked would train, and publish tickets, from noise. The one
exception is a head the family adds and the published checkpoint lacks (`may_lack`), which is drawn
and reported. Directories are written through `files.atomic_directory`, so a killed job leaves none
half-written.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lottery.files import atomic_directory
from lottery.models.uniter.checkpoint import CONFIG_FILE, WEIGHTS_FILE, ModelDirError, check_extra_files

log = logging.getLogger("lottery.models")


def load_hf_config(model_dir: str | Path, config_class: type, model_type: str, label: str) -> Any:
    """The `config_class` of a model directory, without its weights; names the file that is wrong.
    `label` names the family in messages, with its article ("an LXMERT")."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(f"{path} is missing: {model_dir} is not {label} model directory")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ModelDirError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("model_type") != model_type:
        found = data.get("model_type") if isinstance(data, dict) else None
        raise ModelDirError(f"{path}: model_type is {found!r}, not {model_type!r}: this is not {label} model")
    config = config_class.from_dict(data)
    if not getattr(config, "name", None):
        config.name = f"{model_type}-{Path(model_dir).resolve().name}"  # a downloaded directory has no name
    return config


def write_hf_model_files(model: Any, directory: Path, extra_files: Mapping[str, Path] | None = None) -> None:
    """Fill the empty `directory` (a partial one from `files.atomic_directory`) with the model's files."""
    extra_files = dict(extra_files or {})
    check_extra_files(extra_files)
    model.save_pretrained(directory, safe_serialization=True)
    for name, source in extra_files.items():
        shutil.copyfile(source, directory / name)


def save_hf_pretrained(
    model: Any, out_dir: str | Path, extra_files: Mapping[str, Path] | None = None
) -> Path:
    """Write `model` as the new model directory `out_dir` (never over an existing one)."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as partial:
        write_hf_model_files(model, partial, extra_files)
    return out_dir


def load_hf_pretrained(
    model_dir: str | Path, model_class: type, config: Any, may_lack: Sequence[str] = ()
) -> Any:
    """Load a `save_pretrained` directory into `model_class`; every tensor must be there and fit, except
    those matching a pattern of `may_lack` (a head the published checkpoint does not ship)."""
    if (
        not (Path(model_dir) / WEIGHTS_FILE).is_file()
        and not (Path(model_dir) / "pytorch_model.bin").is_file()
    ):
        raise ModelDirError(f"{Path(model_dir) / WEIGHTS_FILE} is missing; the model directory is incomplete")
    try:
        model, info = model_class.from_pretrained(
            str(model_dir), config=config, dtype=torch.float32, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelDirError(
            f"{model_dir}: not a loadable {config.model_type} model directory: {err}"
        ) from err
    allowed = [re.compile(pattern) for pattern in may_lack]
    drawn = sorted(k for k in info["missing_keys"] if any(p.fullmatch(k) for p in allowed))
    missing = sorted(set(info["missing_keys"]) - set(drawn))
    problems = [f"missing tensors {missing[:5]}"] if missing else []
    problems += (
        [f"unexpected tensors {sorted(info['unexpected_keys'])[:5]}"] if info["unexpected_keys"] else []
    )
    mismatched = info.get("mismatched_keys") or []
    problems += [f"misshapen tensors {[str(item) for item in mismatched][:5]}"] if mismatched else []
    if problems:
        raise ModelDirError(f"{model_dir} does not match its {CONFIG_FILE}: " + "; ".join(problems))
    if drawn:
        log.info(f"{model_dir}: drew {drawn} (a head its checkpoint does not ship)")
    return model
