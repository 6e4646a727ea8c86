"""Load an original UNITER checkpoint (a `torch.save`d state dict of ChenRocks/UNITER) into our model.

The names already agree; only the spellings of older saves are normalised: a DataParallel `module.`
prefix and the LayerNorm `gamma`/`beta` of pytorch-pretrained-bert. The body (text and image
embeddings, encoder) must be complete; heads and pooler may be absent (a fine-tuned or a trimmed
checkpoint) and are then left at their UNITER initialisation and listed in the report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from lottery.models.uniter.checkpoint import key_problems
from lottery.models.uniter.config import UniterConfig
from lottery.models.uniter.modeling import TIED_WEIGHTS, UniterForPretraining

REQUIRED_PREFIXES = ("uniter.embeddings.", "uniter.img_embeddings.", "uniter.encoder.")


@dataclass(frozen=True)
class ConversionReport:
    """What `convert_original` did, in our key names."""

    source: Path
    loaded: tuple[str, ...]
    initialised: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...]

    def summary(self) -> str:
        text = f"{self.source}: loaded {len(self.loaded)} tensors, renamed {len(self.renamed)}"
        if self.initialised:
            text += f"; not in the checkpoint, left initialised: {', '.join(self.initialised)}"
        return text


def normalise_key(key: str) -> str:
    """Our name for a key of an original checkpoint: no `module.` prefix, LayerNorm weight/bias."""
    key = key.removeprefix("module.")
    if key.endswith(".gamma"):
        return key.removesuffix(".gamma") + ".weight"
    if key.endswith(".beta"):
        return key.removesuffix(".beta") + ".bias"
    return key


def load_original_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The name -> tensor dict of an original checkpoint, read without unpickling arbitrary objects."""
    if not path.is_file():
        raise FileNotFoundError(f"original UNITER checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file fails anywhere in the unpickler; name the file
        code = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        why = f"it calls {code.group(1)}, so it was not unpickled" if code else str(err).splitlines()[0]
        raise ValueError(f"{path}: not a weights-only torch checkpoint ({why})") from err
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{path}: expected a state dict (name -> tensor) as ChenRocks/UNITER saves, got {type(state).__name__}"
        )
    return dict(state)


def convert_original(
    checkpoint_path: str | Path, config: UniterConfig
) -> tuple[UniterForPretraining, ConversionReport]:
    """A UniterForPretraining of `config` holding the weights of `checkpoint_path`.

    Errors list every unexpected key, every missing body key and every shape mismatch at once.
    A checkpoint may hold both names of a tied pair (as the original does) or either one.
    """
    path = Path(checkpoint_path)
    original = load_original_state_dict(path)
    state: dict[str, torch.Tensor] = {}
    renamed = []
    for key, tensor in original.items():
        new_key = normalise_key(key)
        if new_key in state:
            raise ValueError(f"{path}: {key!r} and another key both mean {new_key!r}; keep one of them")
        state[new_key] = tensor
        if new_key != key:
            renamed.append((key, new_key))

    model = UniterForPretraining(config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    problems = []
    for alias, owner in TIED_WEIGHTS.items():
        if alias not in state:
            continue
        tensor = state.pop(alias)
        if owner not in state:
            state[owner] = tensor
        elif not torch.equal(tensor, state[owner]):
            problems.append(f"{alias} differs from {owner}, but the two are tied in UNITER")

    untied = {key: shape for key, shape in expected.items() if key not in TIED_WEIGHTS}
    problems += key_problems(state, untied, required=REQUIRED_PREFIXES, noun="keys")
    if problems:
        raise ValueError(f"{path} does not convert to UNITER {config.name!r}: " + "; ".join(problems))

    model.load_state_dict(state, strict=False)
    model.tie_weights()
    loaded = sorted(set(state) | {alias for alias, owner in TIED_WEIGHTS.items() if owner in state})
    report = ConversionReport(
        source=path,
        loaded=tuple(loaded),
        initialised=tuple(sorted(key for key in untied if key not in state)),  # none required (checked)
        renamed=tuple(renamed),
    )
    return model, report
