"""The exact threshold over ranks, emulated in one process: two threads stand for two ranks.

The collectives `lottery.sparsity.threshold` calls (`dist.all_reduce_tensor`, `dist.all_gather_tensor`)
are replaced by a rendezvous of the threads, so a rank that raises before a collective its peer has
entered shows up as the peer timing out in it, as it would hang in a real job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from lottery import dist
from lottery.sparsity.threshold import kth_smallest, select_smallest

WAIT_S = 5.0


class FakeWorld:
    """`world` threads exchanging tensors through a barrier; each thread's rank is thread-local."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.barrier = threading.Barrier(world, timeout=WAIT_S)
        self.slots: list[torch.Tensor | None] = [None] * world
        self.local = threading.local()

    def rank(self) -> int:
        return self.local.rank

    def _exchange(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        self.slots[self.rank()] = tensor.clone()
        self.barrier.wait()
        gathered = [t.clone() for t in self.slots]  # type: ignore[union-attr]
        self.barrier.wait()  # nobody overwrites a slot before everyone has read it
        return gathered

    def all_reduce_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._exchange(tensor)).sum(0)

    def all_gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._exchange(tensor))

    def run(self, work: Callable[[int], object]) -> list[object]:
        """`work(rank)` on every rank; each rank's result or exception, in rank order."""
        outcomes: list[object] = [None] * self.world

        def body(rank: int) -> None:
            self.local.rank = rank
            try:
                outcomes[rank] = work(rank)
            except Exception as err:  # noqa: BLE001 - the test inspects every rank's outcome
                outcomes[rank] = err

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=4 * WAIT_S)
        assert not any(t.is_alive() for t in threads), "a rank is still waiting"
        return outcomes


@pytest.fixture
def world(monkeypatch) -> FakeWorld:
    fake = FakeWorld(2)
    for name in ("rank", "all_reduce_tensor", "all_gather_tensor"):
        monkeypatch.setattr(dist, name, getattr(fake, name))
    monkeypatch.setattr(dist, "world_size", lambda: fake.world)
    return fake


def _slices(seed: int = 0) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    values = torch.rand(40, generator=torch.Generator().manual_seed(seed))
    return values, [[values[:7], values[7:20]], [values[20:27], values[27:]]]  # rank -> two pieces


def test_the_emulated_world_gives_the_exact_answer_of_one_process(world):
    values, pieces = _slices()
    got = world.run(lambda rank: kth_smallest(pieces[rank], 11))
    assert got == [float(torch.kthvalue(values, 11).values)] * 2
    chosen = world.run(lambda rank: select_smallest(pieces[rank], 11))
    assert sum(int(c.sum()) for per_rank in chosen for c in per_rank) == 11


def _nan_on_rank_1() -> list[list[torch.Tensor]]:
    _, pieces = _slices()
    pieces[1][1] = pieces[1][1].clone()
    pieces[1][1][3] = float("nan")
    return pieces


def test_a_nan_on_one_rank_raises_the_same_error_on_every_rank(world):
    pieces = _nan_on_rank_1()
    outcomes = world.run(lambda rank: select_smallest(pieces[rank], 5))
    assert all(isinstance(o, ValueError) for o in outcomes), outcomes  # not a timeout on rank 0
    assert str(outcomes[0]) == str(outcomes[1])
    assert "on rank 1, first in piece 1" in str(outcomes[0]) and "non-negative" in str(outcomes[0])


def test_the_error_names_the_parameter_when_the_caller_names_the_pieces(world):
    pieces = _nan_on_rank_1()
    names = ["layer.0.weight", "layer.1.weight"]
    outcomes = world.run(lambda rank: select_smallest(pieces[rank], 5, names))
    assert all("piece 1 (layer.1.weight)" in str(o) for o in outcomes), outcomes


def test_a_negative_score_on_rank_0_stops_rank_1_too(world):
    _, pieces = _slices()
    pieces[0][0] = -pieces[0][0]
    outcomes = world.run(lambda rank: kth_smallest(pieces[rank], 3))
    assert all(isinstance(o, ValueError) for o in outcomes), outcomes
    assert all("7 NaN or negative score(s) on rank 0" in str(o) for o in outcomes), outcomes


def test_inf_marks_pruned_entries_and_is_not_an_error(world):
    _, pieces = _slices()
    pieces[1][0] = torch.full_like(pieces[1][0], float("inf"))
    got = world.run(lambda rank: kth_smallest(pieces[rank], 34))  # 33 finite scores, then inf
    assert got[0] == got[1] == float("inf")


def test_a_nan_weight_is_named_by_its_parameter_when_pruning() -> None:
    """The error a user sees from IMP names the tensor that went NaN, not a piece index."""
    from lottery.sparsity.criteria import Piece, prune_pieces

    good = torch.ones(8)
    bad = torch.ones(8)
    bad[3] = float("nan")
    pieces = [
        Piece(0, "layer.0.weight", (8,), 0, good, torch.ones(8, dtype=torch.bool)),
        Piece(1, "layer.1.weight", (8,), 0, bad, torch.ones(8, dtype=torch.bool)),
    ]
    with pytest.raises(ValueError, match=r"1 NaN .* in piece 1 \(layer\.1\.weight\)"):
        prune_pieces(pieces, "magnitude", 0.5)
