"""A rank killed while it writes its ZeRO shard must not leave `latest` naming the half-written tag.

DeepSpeed's own ``save_checkpoint`` has rank 0 write ``latest`` as soon as rank 0's files are written,
without waiting for the other ranks; a kill of rank 1 in that window left a pointer to a tag without
rank 1's shard, and every later resume failed to load it. The run here checkpoints at steps 2 and 4;
rank 1 dies slowly writing its shard of step 4 (tests/workers/rank0_shard_kill.py).
"""

from __future__ import annotations

import pytest
from conftest import quick_overrides, run, torchrun
from workers.rank0_launch import run_group

from lottery.train.metrics import read_metrics

pytestmark = pytest.mark.distributed

# checkpoints at steps 2 and 4; one val batch, at the end only: two short launches
FOUR_STEPS = {
    "train.steps": 4,
    "train.ckpt_every": 2,
    "train.val_every": 4,
    "train.val_batches": 1,
    "train.val_at_start": "false",
    "train.zero_stage": 2,
}


def test_a_rank_killed_mid_shard_leaves_the_previous_latest_and_the_rerun_resumes_from_it(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    run_dir = tmp_path / "run"
    overrides = quick_overrides(run_dir, shapes_dir, mini_model_dir, **FOUR_STEPS)
    killed = run_group(torchrun() + ["tests/workers/rank0_shard_kill.py", "step_000004"] + overrides, 120)
    assert killed.returncode not in (None, 0), killed.stderr[-3000:]
    pointer = run_dir / "checkpoints" / "latest"
    assert pointer.read_text().strip() == "step_000002", "latest names a tag rank 1 never finished"

    resumed = run(torchrun() + ["-m", "lottery", "pretrain"] + overrides, timeout=120)
    assert "resumed from the checkpoint at step 2" in resumed.stdout
    assert pointer.read_text().strip() == "step_000004"
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "val" not in r] == list(range(1, 5))
    assert (run_dir / "model" / "model.safetensors").is_file()
