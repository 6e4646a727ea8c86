"""Our UNITER model directory: `config.json` (a UniterConfig) + `model.safetensors`.

config.json also names `model_type` "uniter" and the class (`architectures`), so that, after
`import lottery.models.uniter`, transformers' `AutoModel.from_pretrained(dir)` opens it too (hf_config.py).
A config.json written before carries the UniterConfig alone, and still loads.

Tied weights are stored once, under their owner's name (see TIED_WEIGHTS), and re-tied on load.
A directory is written through `files.atomic_directory` (filled under a hidden name, fsynced, renamed),
so a killed job never leaves a half-written model behind, and loading needs safetensors only (no
pickle). Every directory that cannot be used raises `ModelDirError`, naming the directory or file:
the CLI prints it as one line and exits 2. A fine-tuned directory
(finetuned.py: the same config.json, a task head instead of the pre-training heads) is refused by
`from_pretrained`, which names `from_finetuned`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lottery.files import atomic_directory
from lottery.models.uniter.config import UniterConfig
from lottery.models.uniter.hf_config import config_from_json, config_json
from lottery.models.uniter.modeling import TIED_WEIGHTS, UniterForPretraining

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# a fine-tuned directory (finetuned.py) says what its head is here; it has no pre-training heads
TASK_FILE = "task.json"
# what fine-tunes wrote into config.json before task.json existed
LEGACY_TASK_KEYS = ("task", "num_outputs")


class ModelDirError(ValueError):
    """A model directory that cannot be used for what was asked; the message names it and why."""


def format_shape(shape: torch.Size | tuple[int, ...]) -> str:
    """`768x2048`, the notation of the reference key lists."""
    return "x".join(str(d) for d in shape)


def shape_mismatches(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size]) -> list[str]:
    """One line per key present in both whose shapes differ: `key: expected AxB, got CxD`."""
    return [
        f"{key}: expected {format_shape(expected[key])}, got {format_shape(tensor.shape)}"
        for key, tensor in tensors.items()
        if key in expected and tensor.shape != expected[key]
    ]


def key_problems(
    tensors: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    *,
    required: tuple[str, ...] | None = None,
    noun: str = "tensors",
    listed: int = 0,
) -> list[str]:
    """What keeps `tensors` from loading into a model whose state is shaped `expected`, one item each:
    unexpected keys, missing keys (only those under a `required` prefix, when given: a partial source
    such as a BERT leaves the rest at their init), and shape mismatches. `listed` > 0 shortens the
    key lists to that many."""

    def named(keys: list[str]) -> str:
        return f"{keys[:listed]} ..." if listed and len(keys) > listed else f"{keys}"

    unexpected = sorted(set(tensors) - set(expected))
    missing = sorted(k for k in expected if k not in tensors and (required is None or k.startswith(required)))
    found = [f"unexpected {noun} {named(unexpected)}"] if unexpected else []
    found += [f"missing {noun} {named(missing)}"] if missing else []
    return found + shape_mismatches(tensors, expected)


def save_pretrained(
    model: UniterForPretraining, out_dir: str | Path, extra_files: Mapping[str, Path] | None = None
) -> Path:
    """Write `model` as a new model directory `out_dir` and return its path.

    `extra_files` maps a file name in the directory to a file to copy there (e.g. the tokenizer
    files from `from_bert.tokenizer_files`). Call it on one rank, with a full (not ZeRO-3
    partitioned) model. An existing `out_dir` is never overwritten: model directories are written once.
    """
    out_dir = Path(out_dir)
    # atomic_directory refuses an existing out_dir; write_model_files checks the model and extra files
    # before it writes anything, and a refusal removes the partial directory
    with atomic_directory(out_dir) as partial:
        write_model_files(model, partial, extra_files)
    return out_dir


def _check_savable(model: UniterForPretraining, extra_files: Mapping[str, Path]) -> None:
    """Refuse before anything is written: untied weights, a clashing or missing extra file."""
    for alias, owner in TIED_WEIGHTS.items():
        if model.get_parameter(alias) is not model.get_parameter(owner):
            raise ValueError(f"{alias} is not tied to {owner}; call model.tie_weights() before saving")
    check_extra_files(extra_files)


def check_extra_files(extra_files: Mapping[str, Path]) -> None:
    """Files to copy into a model directory: plain names that do not clash with its own, and present."""
    for name, source in extra_files.items():
        if name in (CONFIG_FILE, WEIGHTS_FILE) or Path(name).name != name:
            raise ValueError(
                f"extra file name {name!r} must be a plain file name other than {CONFIG_FILE}/{WEIGHTS_FILE}"
            )
        if not Path(source).is_file():
            raise FileNotFoundError(f"extra file {name!r}: {source} does not exist")


def write_model_files(
    model: UniterForPretraining, directory: Path, extra_files: Mapping[str, Path] | None = None
) -> None:
    """Fill the empty `directory` (a partial one from `files.atomic_directory`) with the model's files.

    For a caller that adds files of its own before the directory is renamed into place (the IMP
    rewind point adds its record); everyone else calls `save_pretrained`.
    """
    extra_files = dict(extra_files or {})
    _check_savable(model, extra_files)
    tensors = {
        key: value.detach().contiguous()
        for key, value in model.state_dict().items()
        if key not in TIED_WEIGHTS
    }
    save_file(tensors, directory / WEIGHTS_FILE, metadata={"format": "pt", "tied": json.dumps(TIED_WEIGHTS)})
    for name, source in extra_files.items():
        shutil.copyfile(source, directory / name)
    data = config_json(model.config.to_uniter_config(), type(model).__name__)
    (directory / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")


def load_config(model_dir: str | Path) -> UniterConfig:
    """The UniterConfig of a model directory, without reading its weights.

    A config.json naming `model_type` is read as transformers' AutoConfig reads it; one without (written
    before model_type was) must hold exactly the UniterConfig keys, as it always had to.
    """
    config_path = Path(model_dir) / CONFIG_FILE
    if not Path(model_dir).is_dir():
        raise ModelDirError(f"UNITER model directory {model_dir} does not exist")
    if not config_path.is_file():
        raise ModelDirError(
            f"{config_path} is missing: {model_dir} is not a UNITER model directory ({CONFIG_FILE} + {WEIGHTS_FILE})"
        )
    try:
        data = json.loads(config_path.read_text())
        if isinstance(data, dict) and "model_type" in data:
            return config_from_json(data)
        if isinstance(data, dict) and set(LEGACY_TASK_KEYS) <= set(data):
            data = {k: v for k, v in data.items() if k not in LEGACY_TASK_KEYS}  # an older fine-tuned dir
        return UniterConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise ModelDirError(f"{config_path}: not a valid UniterConfig: {err}") from err


def read_weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a model directory, or one error naming the file that is missing or unreadable."""
    weights_path = Path(model_dir) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelDirError(f"{weights_path} is missing; the model directory is incomplete")
    try:
        return load_file(weights_path)
    except SafetensorError as err:
        raise ModelDirError(f"{weights_path}: not a readable safetensors file: {err}") from err


def refuse_finetuned(model_dir: Path) -> None:
    """A `ModelDirError` if `model_dir` is a fine-tuned one: what needs the pre-training heads says so first."""
    from lottery.models.uniter.finetuned import task_head

    head = task_head(model_dir)
    if head is not None:
        raise ModelDirError(
            f"{model_dir} is a fine-tuned {head.task} model (backbone + task head, no pre-training heads): "
            "load it with lottery.models.uniter.from_finetuned"
        )


def from_pretrained(model_dir: str | Path) -> UniterForPretraining:
    """Load a directory written by `save_pretrained`; every missing or unexpected tensor is an error.

    A fine-tuned directory (a task head, no pre-training heads) is refused, naming `from_finetuned`.
    """
    config = load_config(model_dir)
    refuse_finetuned(Path(model_dir))
    weights_path = Path(model_dir) / WEIGHTS_FILE
    tensors = read_weights(model_dir)

    model = UniterForPretraining(config)
    expected = {key: value.shape for key, value in model.state_dict().items() if key not in TIED_WEIGHTS}
    problems = key_problems(tensors, expected, listed=5)
    if problems:
        shown = problems[:5] + ([f"... {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise ModelDirError(
            f"{weights_path} does not match its config {config.name!r} ({Path(model_dir) / CONFIG_FILE}): "
            + "; ".join(shown)
        )
    tensors.update({alias: tensors[owner] for alias, owner in TIED_WEIGHTS.items()})
    model.load_state_dict(tensors)
    model.tie_weights()
    return model


def load_tokenizer(model_dir: Path):
    """The tokenizer a model directory carries (copied from its BERT when it was built)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise ModelDirError(
            f"{model_dir} has no tokenizer files (vocab.txt / tokenizer.json); models built by "
            "`lottery model init` carry their BERT's tokenizer"
        ) from err


def skeleton(model_dir: str | Path) -> UniterForPretraining:
    """The pre-training model of a directory from its config.json alone (drawn weights, for shapes and names)."""
    return UniterForPretraining(load_config(model_dir))


def input_sizes(model_dir: str | Path) -> tuple[int, int]:
    """(region feature size, detector classes) the model reads: what the data must give."""
    config = load_config(model_dir)
    return config.img_dim, config.num_region_classes
