"""A preset's prunable shapes and a seeded random mask over them, without building its weights.

Figures 1-3 are about ticket and threshold costs at the uniter-base scope (12 layers x 768 hidden,
85,524,480 prunable weights); those depend only on the names and shapes, so the model is built on the
meta device (no memory, about a second) and only its prunable names and shapes are kept.
"""

from __future__ import annotations

import torch

from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import DEFAULT_SCOPE

UNITER_BASE_PRUNABLE = 85_524_480  # 12 x (4 x 768^2 + 2 x 768 x 3072) + the 768^2 pooler


def prunable_shapes(preset: str = "uniter-base") -> dict[str, tuple[int, ...]]:
    """name -> shape of every prunable parameter of the UNITER `preset`, in the model's (ticket) order."""
    from lottery.models.uniter import UniterForPretraining
    from lottery.models.uniter import preset as preset_config

    with torch.device("meta"):
        model = UniterForPretraining(preset_config(preset))
    params = dict(model.named_parameters())
    return {name: tuple(params[name].shape) for name in model.prunable()}


def random_masks(shapes: dict[str, tuple[int, ...]], sparsity: float, seed: int = 0) -> MaskSet:
    """Each weight pruned with probability `sparsity`, independently: the incompressible worst case for
    a bit-packed ticket (a magnitude mask is just as dense in bits)."""
    generator = torch.Generator().manual_seed(seed)
    masks = {name: torch.rand(shape, generator=generator) >= sparsity for name, shape in shapes.items()}
    return MaskSet(masks, DEFAULT_SCOPE)


def tiny_shapes(layers: int = 2, hidden: int = 16) -> dict[str, tuple[int, ...]]:
    """The uniter-base scope's names and shapes for a `layers` x `hidden` encoder (FFN 4 x hidden), for tests."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(layers):
        prefix = f"uniter.encoder.layer.{layer}."
        for part in ("query", "key", "value"):
            shapes[f"{prefix}attention.self.{part}.weight"] = (hidden, hidden)
        shapes[f"{prefix}attention.output.dense.weight"] = (hidden, hidden)
        shapes[f"{prefix}intermediate.dense.weight"] = (4 * hidden, hidden)
        shapes[f"{prefix}output.dense.weight"] = (hidden, 4 * hidden)
    shapes["uniter.pooler.dense.weight"] = (hidden, hidden)
    return shapes


def rank_slice(numel: int, world: int, rank: int) -> tuple[int, int]:
    """(start, length) of `rank`'s ZeRO-3-style share of a flattened tensor of `numel` entries: equal
    shares of ceil(numel / world), the last ones short or empty, as DeepSpeed partitions a parameter."""
    per_rank = -(-numel // world)
    start = min(numel, rank * per_rank)
    return start, max(0, min(per_rank, numel - start))
