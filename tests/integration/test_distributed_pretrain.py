"""2-rank pre-training through the real launchers: every ZeRO stage learns, and resume is exact."""

from __future__ import annotations

import pytest
from conftest import free_port, quick_overrides, run, torchrun

from lottery.train.metrics import read_metrics

pytestmark = pytest.mark.distributed


def _val(records: list[dict]) -> dict[int, dict]:
    return {r["step"]: r["val"] for r in records if "val" in r}


def _assert_learned_on_two_ranks(run_dir):
    records = read_metrics(run_dir / "metrics.jsonl")
    val = _val(records)
    assert val[12]["loss"] < val[0]["loss"], val
    assert {r["world_size"] for r in records if "val" not in r} == {2}
    assert (run_dir / "model" / "model.safetensors").is_file()


# one stage here: ZeRO-0 pre-training runs in every theta0 build and the main job, ZeRO-3 in the IMP
# tests (each round is a pre-training run); the masks on every stage are test_enforce_matrix.py's
@pytest.mark.parametrize("stage", [2])
def test_deepspeed_launcher_two_ranks_lowers_val_loss(
    stage, tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    run_dir = tmp_path / f"zero{stage}"
    run(
        ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "--module", "lottery", "pretrain"]
        + quick_overrides(run_dir, shapes_dir, mini_model_dir, **{"train.zero_stage": stage})
    )
    _assert_learned_on_two_ranks(run_dir)


def test_accelerate_launch_two_ranks_lowers_val_loss(tmp_path, shapes_dir, mini_model_dir, deepspeed_ops):
    run_dir = tmp_path / "accelerate"
    run(
        ["accelerate", "launch", "--config_file", "launch/accelerate/two_ranks.yaml"]
        + ["--main_process_port", str(free_port()), "-m", "lottery", "pretrain"]
        + quick_overrides(run_dir, shapes_dir, mini_model_dir, **{"train.zero_stage": 1})
    )
    _assert_learned_on_two_ranks(run_dir)


# 7 steps of single-object scenes, then the main scenes: the stop at step 5 falls inside the phase
CURRICULUM = {"data.curriculum": "[{steps: 7, train_samples: 256}]"}


def _torchrun(run_dir, shapes_dir, model_dir, **extra):
    return run(
        torchrun()
        + ["-m", "lottery", "pretrain"]
        + quick_overrides(run_dir, shapes_dir, model_dir, **{"train.zero_stage": 2, **CURRICULUM}, **extra)
    )


def test_torchrun_resume_after_a_stop_continues_with_the_same_losses_across_a_curriculum_phase(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _torchrun(whole, shapes_dir, mini_model_dir)
    _assert_learned_on_two_ranks(whole)

    first = _torchrun(resumed, shapes_dir, mini_model_dir, **{"train.stop_after_steps": 5})
    assert "stopped after step 5 of 12" in first.stdout
    second = _torchrun(resumed, shapes_dir, mini_model_dir)
    assert "resumed from the checkpoint at step 5" in second.stdout
    assert "step 8: scenes of" in second.stdout

    expected = {r["step"]: r["loss"] for r in read_metrics(whole / "metrics.jsonl") if "val" not in r}
    got = {r["step"]: r["loss"] for r in read_metrics(resumed / "metrics.jsonl") if "val" not in r}
    assert sorted(got) == list(range(1, 13))
    for step in range(6, 13):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    assert _val(read_metrics(resumed / "metrics.jsonl"))[12]["loss"] == pytest.approx(
        _val(read_metrics(whole / "metrics.jsonl"))[12]["loss"], rel=1e-5
    )
