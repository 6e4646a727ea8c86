"""What a ticket is checked against: a model directory's name, prunable layout and fingerprint.

A ticket fits a model when its fingerprint (the ordered prunable names and shapes) is the model's, so
the layout must come from the directory's own family (`lottery.models.families.family_of`): a UNITER
and an LXMERT directory name and order their weights differently. The model is built from its config
on the meta device, without reading its weights: the registration order of its parameters is the order
the fingerprint is defined on, which the weight file (sorted by name) does not keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def skeleton(model_dir: str | Path) -> Any:
    """The pre-training model of `model_dir`'s family on the meta device: its names, shapes and config."""
    import torch

    from lottery.models.families import family_of

    family = family_of(model_dir)  # a ModelDirError names a directory of no known family
    with torch.device("meta"):  # built from config.json alone: no weights read, no memory
        return family.skeleton(Path(model_dir))


def model_name(model_dir: str | Path) -> str:
    """The config name of a model directory (e.g. "uniter-mini", "lxmert-mini"), as tickets record it."""
    return skeleton(model_dir).config.name


def model_layout(model_dir: str | Path, scope: Sequence[str]) -> tuple[str, str, dict[str, tuple[int, ...]]]:
    """(config name, fingerprint, prunable name -> shape) of a model directory, without its weights."""
    from lottery.sparsity.scope import ScopeError, model_fingerprint, prunable_parameters
    from lottery.tickets import TicketError

    model = skeleton(model_dir)
    try:
        params = prunable_parameters(model, scope)
    except ScopeError as err:
        raise TicketError(f"{model_dir}: {err}") from None
    return model.config.name, model_fingerprint(model, scope), {n: tuple(p.shape) for n, p in params.items()}
