"""Two jobs publishing one alias into a shared store: one wins, the other is told which, nothing torn."""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketMeta, TicketStore
from lottery.tickets.alias_lock import AliasTaken

META = TicketMeta(family="uniter", model="tiny", method="imp")


def _ticket(store: TicketStore, pattern: list[bool]) -> str:
    return store.put(MaskSet({"w": torch.tensor(pattern * 8)}), META)


def test_an_alias_moved_by_another_job_since_this_one_began_is_left_to_it_naming_the_winner(tmp_path):
    store = TicketStore(tmp_path)
    ours, theirs = _ticket(store, [True, False]), _ticket(store, [False, True])
    seen = store.current("x/s60")  # both jobs begin: no such alias yet
    assert seen is None
    store.alias("x/s60", theirs, expect=seen, command="lottery imp (the other job)")
    with pytest.raises(AliasTaken, match=r"lottery imp \(the other job\)") as taken:
        store.alias("x/s60", ours, expect=seen)
    assert taken.value.winner == theirs and store.resolve("x/s60") == theirs
    assert store.alias("x/s60", theirs, expect=seen) == theirs  # the winner publishing again: no conflict
    assert store.alias("x/s60", ours) == ours  # without `expect`: a deliberate move, as `ticket alias`


def _publish(root: str, pattern: list[bool], start, results) -> None:
    store = TicketStore(root)
    target = _ticket(store, pattern)
    start.wait()
    try:
        store.alias("x/s70", target, expect=None)
        results.put(("won", target))
    except AliasTaken as taken:
        results.put(("lost", taken.winner))


def test_racing_publishers_agree_on_one_winner(tmp_path):
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(4), context.Queue()
    patterns = [[True, False], [False, True], [True, True, False, False], [False, False, True, True]]
    workers = [context.Process(target=_publish, args=(str(tmp_path), p, start, results)) for p in patterns]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in workers]
    winners = [target for verdict, target in outcomes if verdict == "won"]
    assert len(winners) == 1, outcomes
    assert {target for verdict, target in outcomes if verdict == "lost"} <= set(winners)
    assert TicketStore(tmp_path).resolve("x/s70") == winners[0]
