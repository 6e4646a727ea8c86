"""The stop on a non-finite loss, on one process: what it names and how the command ends."""

from __future__ import annotations

import math

import pytest
import torch

from lottery.cli_errors import EXIT_DIVERGED, classify
from lottery.faults import poisoned_loss
from lottery.train.divergence import NonFiniteLoss, first_non_finite, stop_if_not_finite


def test_finite_losses_go_on_and_the_first_bad_one_is_named_with_its_task():
    stop_if_not_finite(3, [("mlm", 1.5), ("itm", 0.7)])
    assert first_non_finite([("mlm", 1.0), ("itm", math.inf), ("mrfr", math.nan)]) == ("itm", math.inf)
    with pytest.raises(NonFiniteLoss, match=r"step 7: the itm loss is nan on rank\(s\) 0") as raised:
        stop_if_not_finite(7, [("mlm", 1.0), ("itm", math.nan)])
    assert classify(raised.value) == ("training diverged: ", EXIT_DIVERGED)


def test_the_injected_nan_hits_only_the_named_step_and_rank(monkeypatch):
    loss = torch.tensor(2.0)
    monkeypatch.setenv("LOTTERY_NAN_LOSS", "4@1")
    monkeypatch.setenv("RANK", "1")
    assert poisoned_loss(loss, 3) is loss and poisoned_loss(loss, 4).isnan()
    monkeypatch.setenv("RANK", "0")
    assert poisoned_loss(loss, 4) is loss
    monkeypatch.setenv("LOTTERY_NAN_LOSS", "4")
    assert poisoned_loss(loss, 4).isnan()


def test_the_per_step_stop_agreement_carries_the_loss_check(monkeypatch):
    """The loops' one per-step all-gather answers both "was a rank signalled" and "did a loss diverge"."""
    from lottery.train import step
    from lottery.train.step import StopRequest

    monkeypatch.setattr(step, "_received", [])
    with StopRequest() as stop:
        assert stop.agreed(2, [("mlm", 0.5), ("itm", 0.6)]) is None
        with pytest.raises(NonFiniteLoss, match=r"step 3: the itm loss is inf on rank\(s\) 0"):
            stop.agreed(3, [("mlm", 0.5), ("itm", math.inf)])
