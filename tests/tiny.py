"""The tiny UNITER config shared by tests: small enough for a step in milliseconds."""

from __future__ import annotations

from lottery.models.uniter import UniterConfig

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
