"""Pruning criteria: global magnitude, layer-wise magnitude, seeded random, and N:M structured.

Every criterion works on `Piece`s, the part of each prunable parameter this rank holds (the whole
flattened tensor in one process, a ZeRO-3 partition or a slice of a replicated weight on many ranks),
so the same code prunes a model directory and a partitioned engine, with the same result.

Targets are absolute: `sparsity` is the fraction of the original prunable weights pruned after this
call, so pruning "10% of the original" from a mask at 30% means `sparsity=0.4`. Weights already
pruned stay pruned; only survivors are candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lottery import dist
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import DEFAULT_SCOPE
from lottery.sparsity.threshold import LazyScores, Scores, select_smallest

METHODS = ("magnitude", "magnitude-layerwise", "random", "nm")


@dataclass(frozen=True)
class Piece:
    """Entries [start, start + len(weights)) of the flattened parameter `name` held by this rank."""

    index: int  # position of the parameter in the scope order; seeds random scores
    name: str
    shape: tuple[int, ...]  # the full parameter shape
    start: int
    weights: Tensor  # 1-D, any float dtype (scores are computed in fp32)
    kept: Tensor  # 1-D bool, the current mask over the same entries

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.weights.numel() == self.numel


def prune_pieces(
    pieces: Sequence[Piece], method: str, sparsity: float, *, seed: int = 0, n: int = 2, m: int = 4
) -> list[Tensor]:
    """The new `kept` of each piece (collective). See the module docstring for the meaning of `sparsity`."""
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "nm":
        return [nm_kept(p, n, m) for p in pieces]
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if method == "magnitude-layerwise":
        return _layerwise(pieces, sparsity)
    scores = [piece_scores(p, method, seed) for p in pieces]
    total = sum(p.numel for p in pieces)
    pruned = int(dist.all_reduce_tensor(torch.tensor([sum(_pruned(p) for p in pieces)]))[0])
    k = _count_to_prune(round(sparsity * total), pruned, "the prunable scope")
    chosen = select_smallest(scores, k, names=[p.name for p in pieces])
    return [_survivors(p, c) for p, c in zip(pieces, chosen, strict=True)]


def _layerwise(pieces: Sequence[Piece], sparsity: float) -> list[Tensor]:
    pruned = dist.all_reduce_tensor(torch.tensor([_pruned(p) for p in pieces], dtype=torch.long))
    kept = []
    for piece, already in zip(pieces, pruned.tolist(), strict=True):
        k = _count_to_prune(round(sparsity * piece.numel), already, piece.name)
        (chosen,) = select_smallest([piece_scores(piece, "magnitude", 0)], k, names=[piece.name])
        kept.append(_survivors(piece, chosen))
    return kept


def _survivors(piece: Piece, chosen: Tensor) -> Tensor:
    """The piece's new kept mask, `kept & ~chosen`, written over `chosen` (the select's fresh output)
    rather than into a second bool array of the shard's size."""
    return torch.logical_and(piece.kept.cpu(), chosen.logical_not_(), out=chosen)


def _pruned(piece: Piece) -> int:
    """Entries of the piece already pruned, counted without a negated copy of its mask."""
    return piece.kept.numel() - int(piece.kept.sum())


def _count_to_prune(target: int, already: int, where: str) -> int:
    if target < already:
        raise ValueError(
            f"{where}: {already} weights are already pruned, more than the target {target}; "
            "a target sparsity must not be below the mask's current sparsity"
        )
    return target - already


def piece_scores(piece: Piece, method: str, seed: int) -> Scores:
    """Non-negative fp32 scores, +inf where already pruned (never chosen before a survivor).

    Magnitude scores are computed a chunk at a time when the select asks (`LazyScores`), so a full
    |w| copy of the shard is never held; random scores are drawn whole, for a reason given below.
    """
    if method == "random":
        # drawn for the whole parameter and sliced, so the draw does not depend on the partitioning
        generator = torch.Generator().manual_seed(seed * 1_000_003 + piece.index)
        values = torch.rand(piece.numel, generator=generator)[
            piece.start : piece.start + piece.weights.numel()
        ]
        return values.masked_fill(~piece.kept.cpu(), float("inf"))

    def magnitude(start: int, stop: int) -> Tensor:
        scores = piece.weights[start:stop].detach().float().abs()
        return scores.masked_fill_(~piece.kept[start:stop].to(scores.device), float("inf"))

    return LazyScores(piece.weights.numel(), magnitude)


def nm_kept(piece: Piece, n: int, m: int) -> Tensor:
    """Keep the n largest |w| in every group of m consecutive weights along the input (last) dimension.

    Already-pruned weights rank last, so a group keeps fewer than n only if it had fewer than n
    survivors. Needs the whole parameter and an input dimension divisible by m.
    """
    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < n < m, got {n}:{m}")
    if not piece.whole:
        raise ValueError(f"{piece.name}: N:M pruning needs the whole parameter, got a partition")
    if len(piece.shape) < 2 or piece.shape[-1] % m:
        raise ValueError(f"{piece.name}: input dimension of shape {piece.shape} is not divisible by m={m}")
    magnitude = piece.weights.detach().float().abs().cpu().masked_fill(~piece.kept.cpu(), -1.0)
    groups = magnitude.reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(n, dim=1).indices, True)
    return (keep.reshape(-1) & piece.kept.cpu()).to(piece.kept.device)


def cut(
    weights: Mapping[str, Tensor],
    method: str,
    sparsity: float,
    *,
    scope: Sequence[str] = DEFAULT_SCOPE,
    seed: int = 0,
    n: int = 2,
    m: int = 4,
    base: MaskSet | None = None,
) -> MaskSet:
    """One-shot pruning of whole weights in one process (a model directory, not an engine).

    `weights` are the prunable parameters in scope order; `base` is a mask to prune further.
    """
    base = base or MaskSet.dense({name: w.shape for name, w in weights.items()}, scope)
    pieces = [
        Piece(i, name, tuple(w.shape), 0, w.reshape(-1), base.masks[name].reshape(-1))
        for i, (name, w) in enumerate(weights.items())
    ]
    kept = prune_pieces(pieces, method, sparsity, seed=seed, n=n, m=m)
    return MaskSet({p.name: k.reshape(p.shape) for p, k in zip(pieces, kept, strict=True)}, tuple(scope))
