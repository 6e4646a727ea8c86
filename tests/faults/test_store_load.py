"""One ticket store under load: 8 readers and 2 publishers for a minute, every read verified.

The publishers put new tickets and move two kinds of alias: one both of them move (`shared/latest`, a
deliberate move, as `lottery ticket alias` makes) and one each of their own. The readers list the
aliases, resolve each and load it, which checks the content hash, the header and the layout; they also
read the alias files directly, so a torn or dangling alias is seen even between a resolve and a load.
`LOTTERY_LOAD_SECONDS` shortens the minute for a quick local run.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback

import pytest
import torch

from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketMeta, TicketStore

pytestmark = pytest.mark.distributed

SECONDS = float(os.environ.get("LOTTERY_LOAD_SECONDS", "60"))
READERS, PUBLISHERS = 8, 2
WEIGHTS = 400_000  # ~50 KB a ticket: a write takes long enough to be caught mid-way if it could be
META = TicketMeta(family="uniter", model="load-test", method="random")


def _publish(root: str, index: int, start, results) -> None:
    start.wait()
    until = time.time() + SECONDS
    store, generator, count = TicketStore(root), torch.Generator().manual_seed(index), 0
    try:
        while time.time() < until:
            masks = MaskSet({"w": torch.rand(WEIGHTS, generator=generator) > 0.6})
            ticket = store.put(masks, META, alias=f"pub{index}/current")
            store.alias("shared/latest", ticket)
            count += 1
        results.put(("publisher", index, count, None))
    except Exception:
        results.put(("publisher", index, count, traceback.format_exc()))


def _read(root: str, index: int, start, results) -> None:
    start.wait()
    until = time.time() + SECONDS
    store, count = TicketStore(root), 0
    try:
        while time.time() < until:
            for alias, target in store.aliases().items():
                assert len(target) == 64 and store.object_path(target).is_file(), (alias, target)
                loaded = store.load(alias)
                assert loaded.masks.total == WEIGHTS
                count += 1
        results.put(("reader", index, count, None))
    except Exception:
        results.put(("reader", index, count, traceback.format_exc()))


def test_eight_readers_and_two_publishers_for_a_minute_see_only_whole_verified_tickets(tmp_path):
    store = TicketStore(tmp_path)
    first = store.put(MaskSet({"w": torch.ones(WEIGHTS, dtype=torch.bool)}), META, alias="shared/latest")
    assert store.resolve("shared/latest") == first
    # spawn: a child forked from a process whose torch thread pool is up can deadlock in its first op
    context = multiprocessing.get_context("spawn")
    results, start = context.Queue(), context.Barrier(READERS + PUBLISHERS)
    workers = [
        context.Process(target=_publish, args=(str(tmp_path), i, start, results)) for i in range(PUBLISHERS)
    ]
    workers += [
        context.Process(target=_read, args=(str(tmp_path), i, start, results)) for i in range(READERS)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=SECONDS + 120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    failures = [f"{kind} {index}: {error}" for kind, index, _, error in outcomes if error]
    assert not failures, "\n".join(failures)
    published = sum(count for kind, _, count, _ in outcomes if kind == "publisher")
    reads = sum(count for kind, _, count, _ in outcomes if kind == "reader")
    assert published >= 2 * PUBLISHERS and reads >= 10 * READERS, (published, reads)
    print(f"{SECONDS:.0f} s: {published} tickets published, {reads} verified reads, 0 failures")
    assert len(store.ids()) == published + 1
    for ticket in store.ids():
        store.load(ticket)
