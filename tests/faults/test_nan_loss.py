"""A loss that stops being finite on one rank stops every rank at that step, naming it, with no ticket cut.

`LOTTERY_NAN_LOSS=step@rank` (lottery/faults.py) multiplies that rank's loss by NaN at that step,
through the real forward and backward, so the NaN reaches the all-reduced gradients as a real
divergence would.
"""

from __future__ import annotations

import pytest
from imp_runs import launch, run_dir, state, write_config

from lottery.tickets import TicketStore

pytestmark = pytest.mark.distributed


def test_a_nan_loss_on_rank_1_stops_both_ranks_at_that_step_naming_it_and_no_ticket_is_cut(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache, monkeypatch
):
    config = write_config(tmp_path / "imp.yaml", shapes_dir, mini_model_dir, zero=2, schedule=[0.5])
    # theta0 first (its own 4 steps must not meet the NaN): the run is killed at round 0's first step
    assert launch(config, theta0_cache, fault="imp.round_00.step@1", check=False).returncode != 0

    monkeypatch.setenv("LOTTERY_NAN_LOSS", "2@1")
    proc = launch(config, theta0_cache, check=False)
    assert proc.returncode != 0
    said = [line for line in proc.stderr.splitlines() if "training diverged: step 2: the" in line]
    assert len(said) == 2, proc.stderr[-3000:]  # one line from each rank
    assert all("loss is nan on rank(s) 1" in line for line in said), said
    directory = run_dir(config)
    assert TicketStore(directory / "masks").aliases() == {}, "a ticket was cut from diverged weights"
    assert state(directory)["rounds_done"] == 0
    latest = directory / "rounds" / "round_00" / "checkpoints" / "latest"
    assert latest.read_text().strip() == "step_000001", "the diverged step was checkpointed"
