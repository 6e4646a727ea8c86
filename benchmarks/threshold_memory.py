"""Figure 3: extra peak memory of the exact global threshold per rank / that rank's shard (target <= 1.1).

At the uniter-base scope (85,524,480 prunable weights) on 2 and 4 gloo ranks. Building a ZeRO-3
engine of that size on 2 cores would take minutes and measure nothing more: the threshold only ever
sees each rank's flat partition. So every rank holds flat fp32 shards laid out as ZeRO-3 partitions
them (`lottery.sparsity.partition.owned_range`: rank r owns entries [r*p, (r+1)*p) of each parameter,
p = ceil(numel / world)), drawn from one seeded normal per parameter so that every world size sees the
same weights, and calls the library's distributed threshold `lottery.sparsity.threshold.kth_smallest`
directly. Rows, each the worst rank's peak RSS growth over the block / its shard's fp32 bytes:

- threshold from the weights: `kth_smallest` over the magnitude scores IMP's cut uses
  (`criteria.piece_scores`, |w| computed a chunk at a time; the figure with the target);
- `kth_smallest` alone, on scores already held (reported: the select's own working set);
- the whole magnitude cut `lottery.sparsity.criteria.prune_pieces` (scores, threshold, tie rule and the
  new kept masks; reported).

Ranks start with a fixed malloc mmap threshold so every freed temporary is returned and counted.

Usage, from the repo root:  python benchmarks/threshold_memory.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from gloo_ranks import run_on_ranks
from rows import Row, add_output_flags, emit
from rss import PeakRss
from scope_masks import prunable_shapes, rank_slice

from lottery import dist
from lottery.sparsity.criteria import Piece, piece_scores, prune_pieces
from lottery.sparsity.threshold import kth_smallest

SPARSITY = 0.6


def shard_pieces(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> list[Piece]:
    """This rank's ZeRO-3-style slice of every parameter, weights ~ N(0, 0.02), all kept."""
    world, rank = dist.world_size(), dist.rank()
    pieces = []
    for index, (name, shape) in enumerate(shapes.items()):
        numel = math.prod(shape)
        start, length = rank_slice(numel, world, rank)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        weights = (torch.randn(numel, generator=generator) * 0.02)[start : start + length].clone()
        pieces.append(Piece(index, name, shape, start, weights, torch.ones(length, dtype=torch.bool)))
    return pieces


def rank_peaks(shapes: dict[str, tuple[int, ...]]) -> dict:
    """This rank's shard bytes and the peak RSS growth (bytes) and seconds of each measured block."""
    pieces = shard_pieces(shapes)
    k = round(SPARSITY * sum(math.prod(s) for s in shapes.values()))
    result: dict = {"shard_bytes": 4 * sum(p.weights.numel() for p in pieces)}
    with PeakRss() as peak:
        start = time.perf_counter()
        threshold = kth_smallest([piece_scores(p, "magnitude", 0) for p in pieces], k)
        result["from_weights_s"] = time.perf_counter() - start
    result["from_weights"] = peak.growth
    result["threshold"] = threshold
    scores = [p.weights.abs() for p in pieces]
    with PeakRss() as peak:
        kth_smallest(scores, k)
    result["select_only"] = peak.growth
    del scores
    with PeakRss() as peak:
        kept = prune_pieces(pieces, "magnitude", SPARSITY)
    result["cut"] = peak.growth
    result["pruned"] = int(dist.all_reduce_tensor(torch.tensor([sum(int((~m).sum()) for m in kept)]))[0])
    return result


def measure(worlds: tuple[int, ...]) -> list[Row]:
    """Figure 3's rows: three ratios per world size (see the module docstring)."""
    shapes = prunable_shapes("uniter-base")
    total = sum(math.prod(s) for s in shapes.values())
    rows = []
    for world in worlds:
        ranks = run_on_ranks(rank_peaks, world, shapes, fixed_mmap=True)
        if len({r["threshold"] for r in ranks}) != 1 or ranks[0]["pruned"] != round(SPARSITY * total):
            raise RuntimeError(f"{world} ranks disagree on the threshold or pruned the wrong count: {ranks}")

        def worst(key: str, ranks: list[dict] = ranks) -> float:
            return max(r[key] / r["shard_bytes"] for r in ranks)

        shard_mib = ranks[0]["shard_bytes"] / 2**20
        rows += [
            Row(
                figure=f"3. threshold extra peak RSS / shard, uniter-base scope, {world} gloo ranks",
                measured=worst("from_weights"),
                target="<= 1.1",
                unit="x",
                note=f"shard {shard_mib:.0f} MiB fp32; lazy |w| + kth_smallest, {ranks[0]['from_weights_s']:.2f} s",
            ),
            Row(
                figure=f"3. ... kth_smallest alone (scores held), {world} ranks",
                measured=worst("select_only"),
                target="reported",
                unit="x",
            ),
            Row(
                figure=f"3. ... whole magnitude cut (prune_pieces), {world} ranks",
                measured=worst("cut"),
                target="reported",
                unit="x",
            ),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_flags(parser)
    args = parser.parse_args()
    emit(measure((2,) if args.quick else (2, 4)), args.json)


if __name__ == "__main__":
    main()
