"""Defect 9: `train.log_every` / `val_every` / `ckpt_every` = 0 divided by zero in pre-training; now
they mean "never, except at the end". A 3-step pre-training (one process, world size 1) with all three
at 0 runs and logs, validates and checkpoints only at its end (and validates at its start)."""

from __future__ import annotations

import sys

import pytest
from conftest import quick_overrides, run

from lottery.train.metrics import read_metrics


def test_a_pretraining_with_every_interval_at_zero_runs_and_acts_only_at_the_end(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    run_dir = tmp_path / "never"
    zeros = {"train.log_every": 0, "train.val_every": 0, "train.ckpt_every": 0}
    short = {"train.steps": 3, "train.val_batches": 1, "train.zero_stage": 0}
    run(
        [sys.executable, "-m", "lottery", "pretrain"]
        + quick_overrides(run_dir, shapes_dir, mini_model_dir, **short, **zeros),
        timeout=300,
    )
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if "val" not in r] == [3]
    assert [r["step"] for r in records if "val" in r] == [0, 3]  # val_at_start, and the end of the run
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_000003"]
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_report_to_tensorboard_gets_every_logged_step_and_validation(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    """Our points and DeepSpeed's own (lr) in one TensorBoard run under the run directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "tracked"
    settings = {"train.steps": 3, "train.val_batches": 1, "train.zero_stage": 0, "train.log_every": 1}
    run(
        [sys.executable, "-m", "lottery", "pretrain"]
        + quick_overrides(
            run_dir, shapes_dir, mini_model_dir, **settings, **{"train.report_to": "tensorboard"}
        ),
        timeout=300,
    )
    events = EventAccumulator(str(run_dir / "tensorboard" / "tracked"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert {"train/lr", "train/samples_per_s", "Train/Samples/lr"} <= set(tags)
    assert any(tag.startswith("train/losses/") for tag in tags)
    val_tags = [tag for tag in tags if tag.startswith("val/")]
    assert val_tags and all([e.step for e in events.Scalars(tag)] == [0, 3] for tag in val_tags)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(
        [r["loss"] for r in records if "val" not in r]
    )
