"""The tiny UNITER config shared by tests (small enough for a step in milliseconds), and a saved model of it."""

from __future__ import annotations

from pathlib import Path

import torch

from lottery.models.uniter import UniterConfig, UniterForPretraining, save_pretrained

TINY = UniterConfig(
    name="tiny",
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    img_dim=16,
    num_region_classes=5,
)


def save_tiny(path: Path, config: UniterConfig = TINY, seed: int = 0) -> Path:
    """A randomly initialised (seeded) tiny model saved as a model directory."""
    torch.manual_seed(seed)
    return save_pretrained(UniterForPretraining(config), path)
