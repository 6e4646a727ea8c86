"""A failure on one rank stops every rank of a 2-rank job at once, each with the failure's message.

What rank 0 alone reads or writes (`dist.on_main`) is failed with `LOTTERY_RAISE=<site>`, or for real
with a corrupt `latest` pointer; the exact threshold is given a NaN on rank 1 only. Before these sites
were collective, the failing rank left and the others waited in the next collective: under torchrun
they were killed without a word, under plain srun they would wait until the job's time limit.
"""

from __future__ import annotations

import pytest
from conftest import quick_overrides, torchrun
from workers.rank0_launch import run_group, torchrun_logged, torchrun_logs

pytestmark = pytest.mark.distributed

TIMEOUT_S = 120
# 2 steps, one checkpoint at the end: every site of a run is reached within a few seconds of training
TINY_RUN = {
    "train.steps": 2,
    "train.val_batches": 2,
    "train.val_every": 2,
    "train.ckpt_every": 2,
    "train.zero_stage": 2,
}


def _pretrain(tmp_path, shapes_dir, model_dir, env: dict[str, str]):
    logs = tmp_path / "logs"
    cmd = torchrun() + torchrun_logged(logs) + ["-m", "lottery", "pretrain"]
    cmd += quick_overrides(tmp_path / "run", shapes_dir, model_dir, **TINY_RUN)
    return run_group(cmd, TIMEOUT_S, env), torchrun_logs(logs)


def _assert_every_rank_stopped_with(outcome, ranks: list[str], message: str, *, racing: bool = False) -> None:
    """Every rank stopped, each naming `message`.

    `racing`: the ranks refuse the input each on its own, at the same moment (a preflight check), so
    when rank 0 exits first torchrun may end rank 1 before it prints; then rank 1 must have printed
    nothing else (no other error, no training).
    """
    assert outcome.returncode is not None, f"still running after {TIMEOUT_S} s: a rank hung\n{ranks}"
    assert outcome.returncode != 0, outcome.stdout[-2000:]
    assert len(ranks) == 2, outcome.stderr[-3000:]
    for rank, text in enumerate(ranks):
        if racing and rank > 0 and message not in text:
            assert "Error" not in text and "step 1" not in text, f"rank {rank}:\n{text[-3000:]}"
            continue
        assert message in text, f"rank {rank} did not report {message!r}:\n{text[-3000:]}"


@pytest.mark.parametrize("site", ["pretrain.config_yaml", "checkpoint.latest_step", "checkpoint.commit"])
def test_a_rank0_failure_at_a_site_stops_both_ranks_with_its_message(
    site, tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    outcome, ranks = _pretrain(tmp_path, shapes_dir, mini_model_dir, {"LOTTERY_RAISE": site})
    _assert_every_rank_stopped_with(outcome, ranks, f"InjectedFault: injected fault at {site}")


def test_a_corrupt_latest_pointer_read_by_rank_0_stops_both_ranks(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    pointer = tmp_path / "run" / "checkpoints" / "latest"
    pointer.parent.mkdir(parents=True)
    pointer.write_text("step_000007")  # a tag that is not there (a checkpoints/ copied in part)
    outcome, ranks = _pretrain(tmp_path, shapes_dir, mini_model_dir, {})
    _assert_every_rank_stopped_with(outcome, ranks, "names 'step_000007', which is not a checkpoint")


def test_a_nan_score_on_rank_1_only_raises_on_both_ranks(tmp_path, deepspeed_ops):
    logs = tmp_path / "logs"
    cmd = torchrun() + torchrun_logged(logs) + ["tests/workers/rank0_nan_threshold.py"]
    outcome = run_group(cmd, 60, {})
    ranks = torchrun_logs(logs)
    _assert_every_rank_stopped_with(outcome, ranks, "1 NaN or negative score(s) on rank 1, first in piece 0")
    assert all(f"rank {r} raised" in text for r, text in enumerate(ranks)), ranks


def test_a_sweep_whose_alias_no_store_holds_stops_both_ranks_naming_it(tmp_path, deepspeed_ops):
    """The sweep's tickets are checked before any model (preflight, on every rank: they race to exit)."""
    logs = tmp_path / "logs"
    cmd = torchrun() + torchrun_logged(logs) + ["-m", "lottery", "sweep", "--tasks", "vqa"]
    cmd += ["--tickets", "dense", "x/missing", f"store={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}"]
    outcome, ranks = run_group(cmd, TIMEOUT_S, {}), torchrun_logs(logs)
    _assert_every_rank_stopped_with(outcome, ranks, "no ticket 'x/missing'", racing=True)
    assert not (tmp_path / "runs").exists(), "a job started before the grid's tickets were resolved"


def test_a_rank0_failure_recording_a_theta0_stops_both_ranks_and_leaves_it_unfinished(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    """theta0's criteria are evaluated by rank 0 alone (`theta0.record`) while rank 1 waits for the verdict."""
    logs, cache = tmp_path / "logs", tmp_path / "cache"
    cmd = torchrun() + torchrun_logged(logs) + ["-m", "lottery", "theta0"]
    cmd += quick_overrides(tmp_path / "run", shapes_dir, mini_model_dir, **TINY_RUN)
    env = {"LOTTERY_RAISE": "theta0.record", "LOTTERY_THETA0_CACHE": str(cache)}
    outcome, ranks = run_group(cmd, TIMEOUT_S, env), torchrun_logs(logs)
    _assert_every_rank_stopped_with(outcome, ranks, "InjectedFault: injected fault at theta0.record")
    (built,) = cache.iterdir()
    assert (built / "model").is_dir() and not (built / "DONE").exists()
