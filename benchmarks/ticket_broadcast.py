"""Figure 2: a uniter-base-scope ticket read, verified and broadcast to 2 and 4 gloo ranks (target < 1 s).

Ours is `lottery.tickets.distributed.load_broadcast`, exactly as a job calls it: rank 0 reads the file
from the store, checks its sha256 against the id, parses it and checks scope and fingerprint; the bytes
(about 10.7 MB: one bit a weight) are broadcast; every other rank parses them into a MaskSet.

The naive baseline is what a job would do without a ticket format: the same masks saved with
`torch.save` as float32 tensors (342 MB), rank 0 reading the file, the bytes broadcast the same way
(`lottery.dist.broadcast_bytes`) and every rank calling `torch.load` on them; nothing is verified.
Both read a file that is in the page cache (it was just written), so this is CPU and copy cost, not
the disk's. A time is the wall time until every rank holds the masks (a barrier closes it), the
median over repeats alternating ours and naive; the ratio ours / naive is the one to carry to
another machine.

Usage, from the repo root:  python benchmarks/ticket_broadcast.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as torch_dist
from gloo_ranks import run_on_ranks
from rows import Row, add_output_flags, emit
from scope_masks import prunable_shapes, random_masks

from lottery import dist
from lottery.tickets.distributed import load_broadcast
from lottery.tickets.format import TicketMeta
from lottery.tickets.store import TicketStore


def _ours(store: str, ticket_id: str, fingerprint: str, scope: list[str]) -> float:
    torch_dist.barrier()
    start = time.perf_counter()
    ticket = load_broadcast(
        store, ticket_id, expect_fingerprint=fingerprint, expect_scope=scope, model_name="uniter-base"
    )
    torch_dist.barrier()
    elapsed = time.perf_counter() - start
    if ticket.masks.fingerprint != fingerprint:
        raise RuntimeError(f"rank {dist.rank()}: the broadcast ticket is not the one written")
    return elapsed


def _naive(path: str) -> float:
    torch_dist.barrier()
    start = time.perf_counter()
    payload = Path(path).read_bytes() if dist.is_main() else None
    masks = torch.load(io.BytesIO(dist.broadcast_bytes(payload)), weights_only=True)
    torch_dist.barrier()
    elapsed = time.perf_counter() - start
    del masks
    return elapsed


def rank_times(
    store: str, ticket_id: str, fingerprint: str, scope: list[str], naive: str, repeats: int
) -> dict:
    """Seconds per load on this rank, ours and naive alternating after one untimed warm-up of each."""
    _ours(store, ticket_id, fingerprint, scope)
    _naive(naive)
    ours, baseline = [], []
    for _ in range(repeats):
        ours.append(_ours(store, ticket_id, fingerprint, scope))
        baseline.append(_naive(naive))
    return {"ours": ours, "naive": baseline}


def measure(repeats: int, worlds: tuple[int, ...] = (2, 4)) -> list[Row]:
    """Figure 2's rows: one time and one ratio per world size."""
    masks = random_masks(prunable_shapes("uniter-base"), 0.6)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = TicketStore(Path(tmp) / "store")
        ticket_id = store.put(masks, TicketMeta(family="uniter", model="uniter-base", method="random"))
        naive = Path(tmp) / "masks-float.pt"
        torch.save({name: mask.float() for name, mask in masks.masks.items()}, naive)
        megabytes = store.object_path(ticket_id).stat().st_size / 1e6, naive.stat().st_size / 1e6
        for world in worlds:
            per_rank = run_on_ranks(
                rank_times,
                world,
                str(store.root),
                ticket_id,
                masks.fingerprint,
                list(masks.scope),
                str(naive),
                repeats,
            )
            # a barrier closes every timing, so rank 0's times are the job's
            ours = statistics.median(per_rank[0]["ours"])
            baseline = statistics.median(per_rank[0]["naive"])
            rows.append(
                Row(
                    figure=f"2. ticket read+verify+broadcast, uniter-base scope, {world} gloo ranks",
                    measured=ours,
                    target="< 1",
                    unit="s",
                    note=f"median of {repeats}; file {megabytes[0]:.1f} MB",
                )
            )
            rows.append(
                Row(
                    figure=f"2. ... / torch.load of float masks broadcast alike, {world} ranks",
                    measured=ours / baseline,
                    target="reported",
                    unit="x",
                    note=f"naive {baseline:.3f} s, file {megabytes[1]:.0f} MB",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_flags(parser)
    args = parser.parse_args()
    emit(measure(repeats=2 if args.quick else 5), args.json)


if __name__ == "__main__":
    main()
