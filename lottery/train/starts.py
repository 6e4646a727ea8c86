"""Where a fine-tune starts: theta0, the BERT initialisation (the paper's theta0'), or shuffled theta0
(theta0'': every weight tensor's values permuted, seeded, which keeps each layer's distribution and
destroys what pre-training put where). Only the backbone (`uniter.*`) is taken; heads start fresh.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

STARTS = ("theta0", "bert", "shuffled")


def backbone_state(model_dir: Path) -> dict[str, Tensor]:
    """The `uniter.*` weights of a model directory."""
    from lottery.models.uniter import from_pretrained

    state = from_pretrained(model_dir).state_dict()
    return {name: value for name, value in state.items() if name.startswith("uniter.")}


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
