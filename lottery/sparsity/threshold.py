"""Exact global selection of the k smallest scores over pieces of tensors spread over ranks.

Each rank holds only its own pieces (its ZeRO-3 partition, or its slice of a replicated weight); no
rank ever sees the whole set. The k-th smallest value is found by a radix select on the bit patterns
of non-negative float32 scores (for x >= 0 the int32 view orders like the float): four passes of one
byte each, each pass a 256-bin histogram summed over ranks with one `all_reduce`. It is exact, costs
4 small collectives and O(shard) memory, and is independent of how the values are split.

Tie rule: exactly k entries are selected. Entries strictly below the threshold are all selected;
entries equal to it are taken in global order, (piece index, rank, position in the piece), until the
count is k. `torch.nn.utils.prune.global_unstructured` selects the same set except among ties, where
its `topk` order is unspecified.

Bad scores (NaN or negative) are found collectively: every rank counts its own, the counts travel with
the first collective (an all-gather of this rank's score count, bad count and first bad piece), and
every rank raises the same error naming the rank and piece. A rank that raised alone, before that
collective, would leave the others waiting in it for good.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lottery import dist

_BYTE_PASSES = 4


def _bits(scores: Tensor) -> Tensor:
    if scores.dtype != torch.float32:
        scores = scores.float()
    return scores.contiguous().view(torch.int32)


def _bad_count(scores: Tensor) -> int:
    """How many of `scores` the radix select cannot order: NaN and negatives (+inf is fine)."""
    scores = scores.float()
    return int((torch.isnan(scores) | (scores < 0)).sum())


def _census(pieces: Sequence[Tensor], names: Sequence[str] | None) -> int:
    """The number of scores over all ranks; raises on every rank alike if any rank has a bad one (collective)."""
    bad = [_bad_count(p) for p in pieces]
    first = next((i for i, count in enumerate(bad) if count), -1)
    mine = torch.tensor([sum(p.numel() for p in pieces), sum(bad), first], dtype=torch.long)
    table = dist.all_gather_tensor(mine)  # (world, 3): the same on every rank
    offenders = torch.nonzero(table[:, 1]).reshape(-1).tolist()
    if offenders:
        rank = offenders[0]
        count, index = int(table[rank, 1]), int(table[rank, 2])
        label = f"piece {index}" + (f" ({names[index]})" if names is not None and index < len(names) else "")
        raise ValueError(
            f"{count} NaN or negative score(s) on rank {rank}, first in {label} (ranks with bad scores: "
            f"{offenders}); scores must be non-negative and not NaN (pass |w| or a uniform draw)"
        )
    return int(table[:, 0].sum())


def kth_smallest(pieces: Sequence[Tensor], k: int, names: Sequence[str] | None = None) -> float:
    """The k-th smallest (1-based) of all ranks' `pieces` together; collective.

    `pieces` are 1-D non-negative float32 tensors (+inf allowed, e.g. for entries already pruned);
    `names` (one per piece, optional) name the parameter in the error a NaN or negative score raises.
    """
    total = _census(pieces, names)
    candidates = [_bits(p.reshape(-1)) for p in pieces]
    if not 1 <= k <= total:
        raise ValueError(f"k={k} is outside 1..{total} (the number of scores over all ranks)")
    prefix = 0
    remaining = k
    for step in range(_BYTE_PASSES):
        shift = 8 * (_BYTE_PASSES - 1 - step)
        histogram = torch.zeros(256, dtype=torch.long)
        for c in candidates:
            histogram += torch.bincount(((c >> shift) & 0xFF).long(), minlength=256)
        histogram = dist.all_reduce_tensor(histogram)
        cumulative = torch.cumsum(histogram, 0)
        digit = int(torch.searchsorted(cumulative, torch.tensor(remaining)))
        remaining -= int(cumulative[digit - 1]) if digit > 0 else 0
        prefix = (prefix << 8) | digit
        candidates = [c[((c >> shift) & 0xFF) == digit] for c in candidates]
    return torch.tensor([prefix], dtype=torch.int32).view(torch.float32).item()


def select_smallest(pieces: Sequence[Tensor], k: int, names: Sequence[str] | None = None) -> list[Tensor]:
    """Bool tensors (shaped like `pieces`) marking exactly k smallest entries over all ranks; collective.

    Every rank must pass the same number of pieces in the same order (one per parameter, possibly empty);
    `names` as for `kth_smallest`.
    """
    if k == 0:
        return [torch.zeros_like(p, dtype=torch.bool) for p in pieces]
    threshold = kth_smallest(pieces, k, names)
    flat = [p.reshape(-1).float() for p in pieces]
    below = [f < threshold for f in flat]
    ties = [f == threshold for f in flat]
    counts = torch.tensor([int(b.sum()) for b in below] + [int(t.sum()) for t in ties], dtype=torch.long)
    n_below = int(dist.all_reduce_tensor(counts[: len(flat)].clone()).sum())
    tie_table = dist.all_gather_tensor(counts[len(flat) :])  # (world, pieces)
    wanted_ties = k - n_below
    rank = dist.rank()
    # ties taken by earlier pieces (all ranks), then by lower ranks within this piece
    before_piece = torch.cumsum(tie_table.sum(0), 0) - tie_table.sum(0)
    before_rank = torch.cumsum(tie_table, 0)[rank] - tie_table[rank]
    selected = []
    for i, (b, t) in enumerate(zip(below, ties, strict=True)):
        already = int(before_piece[i] + before_rank[i])
        take = max(0, min(int(tie_table[rank, i]), wanted_ties - already))
        chosen = b.clone()
        if take:
            chosen[torch.nonzero(t).reshape(-1)[:take]] = True
        selected.append(chosen.reshape(pieces[i].shape))
    return selected
