"""Where a fine-tune starts: theta0, the BERT initialisation (the paper's theta0'), or shuffled theta0
(theta0'': every weight tensor's values permuted, seeded, which keeps each layer's distribution and
destroys what pre-training put where). Only the backbone is taken (`uniter.*`, `lxmert.*`: the model's
`base_model_prefix`); heads start fresh.

A directory is read by its own family (`family_of`): the BERT initialisation is the directory
`ensure_model` built with the family's builder from the same BERT, so every start works for every family.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

STARTS = ("theta0", "bert", "shuffled")


def backbone_state(model_dir: Path) -> dict[str, Tensor]:
    """The backbone weights of a model directory (`uniter.*` for UNITER, `lxmert.*` for LXMERT)."""
    from lottery.models.families import family_of

    model = family_of(model_dir).load(model_dir)
    prefix = f"{model.base_model_prefix}."
    return {name: value for name, value in model.state_dict().items() if name.startswith(prefix)}


def shuffled(state: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Each tensor's values in a random order (one permutation per tensor, drawn from (seed, position))."""
    out = {}
    for index, (name, value) in enumerate(sorted(state.items())):
        if not value.is_floating_point():
            out[name] = value.clone()
            continue
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        flat = value.reshape(-1)
        out[name] = flat[torch.randperm(flat.numel(), generator=generator)].reshape(value.shape).clone()
    return out


def start_state(start: str, theta0_dir: Path, bert_dir: Path, seed: int = 0) -> dict[str, Tensor]:
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; choose one of {', '.join(STARTS)}")
    if start == "bert":
        return backbone_state(bert_dir)
    state = backbone_state(theta0_dir)
    return shuffled(state, seed) if start == "shuffled" else state
