"""A rank of the NaN test of the exact threshold: rank 1 alone holds a NaN score.

Run by tests/integration/test_rank0_sites.py through torchrun. Every rank calls `select_smallest` on
its own slice and prints what it raised as ``rank R raised: ...``, then exits 1; a rank that raised
alone would leave the other waiting in the threshold's first collective.
"""

from __future__ import annotations

import sys

import torch

from lottery import dist
from lottery.sparsity.threshold import select_smallest


def main() -> None:
    dist.init()
    rank = dist.rank()
    scores = torch.rand(64, generator=torch.Generator().manual_seed(rank))
    if rank == 1:
        scores[17] = float("nan")
    try:
        select_smallest([scores[:32], scores[32:]], 10)
    except ValueError as err:
        print(f"rank {rank} raised: {err}", flush=True)
        sys.exit(1)
    print(f"rank {rank} selected without error", flush=True)
    dist.shutdown()


if __name__ == "__main__":
    main()
