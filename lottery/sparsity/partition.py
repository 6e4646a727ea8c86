"""The slice of each prunable parameter this rank owns on a DeepSpeed engine, and masks back from slices.

One layout for every ZeRO stage: rank r owns entries [r * p, min(numel, (r + 1) * p)) of the flattened
parameter, p = ceil(numel / world). That is exactly ZeRO-3's partitioning (its padding sits past
`numel`, at the end of the last rank's partition, and is not zero: it is never read here), and under
ZeRO 0-2, where every rank holds the whole weight, it splits the pruning work the same way, so a mask
does not depend on the stage.
"""

from __future__ import annotations

import math

import torch
from deepspeed.utils import safe_get_local_fp32_param
from torch import Tensor, nn

from lottery import dist
from lottery.sparsity.criteria import Piece
from lottery.sparsity.maskset import MaskSet


def is_partitioned(param: nn.Parameter) -> bool:
    """True for a ZeRO-3 parameter (its data lives in `ds_tensor`; `numel()` is 0 there, use `ds_numel`)."""
    return hasattr(param, "ds_id")


def owned_range(param: nn.Parameter, numel: int) -> tuple[int, int]:
    """(start, length) of the flattened entries this rank owns, without ZeRO-3 padding."""
    world, rank = dist.world_size(), dist.rank()
    per_rank = param.ds_tensor.ds_numel if is_partitioned(param) else math.ceil(numel / world)
    start = min(numel, rank * per_rank)
    return start, max(0, min(per_rank, numel - start))


def engine_pieces(engine, masks: MaskSet) -> list[Piece]:
    """This rank's `Piece` of every parameter of `masks`, read from its fp32 master; collective.

    The master, not the module weight: under bf16/fp16 the module holds a rounded copy, and scores
    read from it would rank weights by their rounding.
    """
    from lottery.sparsity.slots import full_master  # slots.py builds on this module

    params = dict(engine.module.named_parameters())
    pieces = []
    for index, (name, mask) in enumerate(masks.masks.items()):
        param = params[name]
        start, length = owned_range(param, mask.numel())
        if is_partitioned(param):
            weights = safe_get_local_fp32_param(param).reshape(-1)[:length]
        else:
            weights = full_master(engine, param).reshape(-1)[start : start + length]
        kept = mask.reshape(-1)[start : start + length]
        pieces.append(Piece(index, name, tuple(mask.shape), start, weights.detach().float().cpu(), kept))
    return pieces


def gather_masks(pieces: list[Piece], kept: list[Tensor], like: MaskSet) -> MaskSet:
    """The full MaskSet on every rank from each rank's slices; one all_gather of bits-as-bytes."""
    world = dist.world_size()
    sizes = [math.ceil(p.numel / world) for p in pieces]
    local = torch.zeros(sum(sizes), dtype=torch.uint8)
    offset = 0
    for size, k in zip(sizes, kept, strict=True):
        local[offset : offset + k.numel()] = k.to(torch.uint8)
        offset += size
    table = dist.all_gather_tensor(local)  # (world, sum(sizes))
    masks = {}
    offset = 0
    for piece, size in zip(pieces, sizes, strict=True):
        flat = table[:, offset : offset + size].reshape(-1)[: piece.numel].bool()
        masks[piece.name] = flat.reshape(piece.shape).clone()
        offset += size
    return MaskSet(masks, like.scope, like.fingerprint)
