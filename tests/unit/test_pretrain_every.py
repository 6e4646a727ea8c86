"""`train.log_every` / `val_every` / `ckpt_every` = 0 mean "never, except at the end", as in finetune.

The last test runs a 3-step pre-training in one process (no launcher, world size 1) with all three at
0; it trains, so run it under the machine's training lock (`flock /tmp/vl-cpu.lock`).
"""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from conftest import quick_overrides, run

from lottery.config import ConfigError, TrainConfig
from lottery.train.metrics import read_metrics
from lottery.train.step import check_schedule, due


def test_an_interval_marks_its_multiples_and_the_last_step():
    assert [s for s in range(1, 13) if due(s, 5, 12)] == [5, 10, 12]
    assert [s for s in range(1, 13) if due(s, 1, 12)] == list(range(1, 13))


def test_zero_means_only_the_last_step():
    assert [s for s in range(1, 13) if due(s, 0, 12)] == [12]
    assert [s for s in range(1, 6) if due(s, 0, 5)] == [5]  # an invocation stopped early at step 5


@pytest.mark.parametrize("key", ["log_every", "val_every", "ckpt_every"])
def test_zero_is_accepted_and_a_negative_interval_is_refused_naming_its_key(key):
    check_schedule(replace(TrainConfig(), **{key: 0}))
    with pytest.raises(ConfigError, match=f"train.{key}=-1"):
        check_schedule(replace(TrainConfig(), **{key: -1}))


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
