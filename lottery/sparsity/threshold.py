"""Exact global selection of the k smallest scores over pieces of tensors spread over ranks.

Each rank holds only its own pieces (its ZeRO-3 partition, or its slice of a replicated weight); no
rank ever sees the whole set. The k-th smallest value is found by a radix select on the bit patterns
of non-negative float32 scores (for x >= 0 the int32 view orders like the float): two passes of 16
bits each, each pass a histogram summed over ranks with one `all_reduce`. It is exact and independent
of how the values are split.

Memory is what makes it usable on a ZeRO-3 shard: a pass scans the pieces in chunks of `CHUNK`
entries and keeps nothing but the histogram, so the select's working set is a few chunks, whatever
the shard's size. A piece may be a tensor of scores or `LazyScores`, which computes a chunk's scores
when asked (|w| of a weight partition, for instance): then the scores are never held whole either,
and the exact threshold costs about the selection's output (one bool per entry) beyond the weights.

Tie rule: exactly k entries are selected. Entries strictly below the threshold are all selected;
entries equal to it are taken in global order, (piece index, rank, position in the piece), until the
count is k. `torch.nn.utils.prune.global_unstructured` selects the same set except among ties, where
its `topk` order is unspecified.

Bad scores (NaN or negative) are found collectively: every rank counts its own during the first pass,
the counts travel in an all-gather (this rank's score count, bad count and first bad piece) before
that pass's histogram is reduced, and every rank raises the same error naming the rank and piece. A
rank that raised alone would leave the others waiting in a collective for good.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lottery import dist

CHUNK = 1 << 20  # entries per scanned chunk: 4 MiB of fp32 scores
_HIGH_BINS = 1 << 15  # the high 16 bits of a non-negative float32 (sign bit 0)
_LOW_BINS = 1 << 16
_MAGNITUDE = 0x7FFFFFFF  # the bits without the sign: -0.0 orders as 0.0


@dataclass(frozen=True)
class LazyScores:
    """`numel` scores that `compute(start, stop)` returns as a 1-D float tensor, a chunk at a time."""

    numel: int
    compute: Callable[[int, int], Tensor]


Scores = Tensor | LazyScores


def _length(piece: Scores) -> int:
    return piece.numel if isinstance(piece, LazyScores) else piece.numel()


def _chunks(piece: Scores) -> Iterator[tuple[int, Tensor]]:
    """(start, fp32 scores of entries [start, start + CHUNK)) over the whole piece."""
    flat = None if isinstance(piece, LazyScores) else piece.reshape(-1)
    for start in range(0, _length(piece), CHUNK):
        stop = min(start + CHUNK, _length(piece))
        chunk = piece.compute(start, stop) if flat is None else flat[start:stop]
        yield start, chunk if chunk.dtype == torch.float32 else chunk.float()


def _bits(scores: Tensor) -> Tensor:
    return scores.contiguous().view(torch.int32) & _MAGNITUDE


def _histogram(values: Tensor, bins: int) -> Tensor:
    return torch.bincount(values, minlength=bins).cpu()


def _census(table_row: list[int], names: Sequence[str] | None) -> int:
    """All ranks' [score count, bad count, first bad piece]; raises alike on every rank (collective)."""
    table = dist.all_gather_tensor(torch.tensor(table_row, dtype=torch.long))  # (world, 3)
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


def kth_smallest(pieces: Sequence[Scores], k: int, names: Sequence[str] | None = None) -> float:
    """The k-th smallest (1-based) of all ranks' `pieces` together; collective.

    `pieces` are 1-D non-negative float32 tensors or `LazyScores` (+inf allowed, e.g. for entries
    already pruned); `names` (one per piece, optional) name the parameter in the error a NaN or
    negative score raises.
    """
    high = torch.zeros(_HIGH_BINS, dtype=torch.long)
    bad, first_bad = 0, -1
    for index, piece in enumerate(pieces):
        for _, scores in _chunks(piece):
            count = int((torch.isnan(scores) | (scores < 0)).sum())
            if count:
                bad, first_bad = bad + count, first_bad if first_bad >= 0 else index
                continue  # the run stops below; a NaN's bits would overflow the histogram
            high += _histogram(_bits(scores) >> 16, _HIGH_BINS)
    total = _census([sum(_length(p) for p in pieces), bad, first_bad], names)
    if not 1 <= k <= total:
        raise ValueError(f"k={k} is outside 1..{total} (the number of scores over all ranks)")
    prefix, remaining = _digit(dist.all_reduce_tensor(high), k)

    low = torch.zeros(_LOW_BINS, dtype=torch.long)
    for piece in pieces:
        for _, scores in _chunks(piece):
            bits = _bits(scores)
            low += _histogram(bits[(bits >> 16) == prefix] & 0xFFFF, _LOW_BINS)
    digit, _ = _digit(dist.all_reduce_tensor(low), remaining)
    return torch.tensor([(prefix << 16) | digit], dtype=torch.int32).view(torch.float32).item()


def _digit(histogram: Tensor, rank_in: int) -> tuple[int, int]:
    """The bin holding the `rank_in`-th smallest, and that entry's rank within the bin."""
    cumulative = torch.cumsum(histogram, 0)
    digit = int(torch.searchsorted(cumulative, torch.tensor(rank_in)))
    return digit, rank_in - (int(cumulative[digit - 1]) if digit > 0 else 0)


def select_smallest(pieces: Sequence[Scores], k: int, names: Sequence[str] | None = None) -> list[Tensor]:
    """Bool tensors marking exactly k smallest entries over all ranks; collective.

    Each result is shaped like its piece (1-D for `LazyScores`) and lives on the CPU. Every rank must
    pass the same number of pieces in the same order (one per parameter, possibly empty); `names` as
    for `kth_smallest`.
    """
    shapes = [(p.numel,) if isinstance(p, LazyScores) else p.shape for p in pieces]
    if k == 0:
        return [torch.zeros(shape, dtype=torch.bool) for shape in shapes]
    threshold = kth_smallest(pieces, k, names)
    selected = [torch.empty(_length(p), dtype=torch.bool) for p in pieces]
    counts = torch.zeros(2 * len(pieces), dtype=torch.long)  # [below per piece, ties per piece]
    for i, piece in enumerate(pieces):
        for start, scores in _chunks(piece):
            below = scores < threshold
            selected[i][start : start + below.numel()] = below.cpu()
            counts[i] += int(below.sum())
            counts[len(pieces) + i] += int((scores == threshold).sum())
    n_below = int(dist.all_reduce_tensor(counts[: len(pieces)].clone()).sum())
    tie_table = dist.all_gather_tensor(counts[len(pieces) :].clone())  # (world, pieces)
    wanted_ties = k - n_below
    rank = dist.rank()
    # ties taken by earlier pieces (all ranks), then by lower ranks within this piece
    before_piece = torch.cumsum(tie_table.sum(0), 0) - tie_table.sum(0)
    before_rank = torch.cumsum(tie_table, 0)[rank] - tie_table[rank]
    for i, piece in enumerate(pieces):
        take = max(0, min(int(tie_table[rank, i]), wanted_ties - int(before_piece[i] + before_rank[i])))
        for start, scores in _chunks(piece) if take else ():
            positions = torch.nonzero(scores == threshold).reshape(-1)[:take].cpu()
            selected[i][start + positions] = True
            take -= positions.numel()
            if not take:
                break
    return [chosen.view(shape) for chosen, shape in zip(selected, shapes, strict=True)]
