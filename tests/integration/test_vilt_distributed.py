"""ViLT on 2 ranks, ZeRO-2, through the real deepspeed launcher, in one job: `lottery finetune --task nlvr2`
first pre-trains its theta0 (vilt-mini on ViLT's MLM and ITM over the rendered shapes world's patches,
the job's ranks and stage), then fine-tunes NLVR2 (two images a statement) from it."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import RENDERED_SHAPES, free_port, run, theta0_overrides

from lottery.train.metrics import read_metrics

pytestmark = pytest.mark.distributed


def test_vilt_pretrains_and_fine_tunes_nlvr2_on_two_ranks_zero2(tmp_path, rendered_shapes_dir, deepspeed_ops):
    from lottery.models.families import family_of
    from lottery.models.vilt.finetuned import from_finetuned

    cache, model_dir = tmp_path / "theta0-cache", tmp_path / "vilt-mini"  # both built by the job
    pretraining = {"train.steps": 8, "train.val_every": 8, "train.ckpt_every": 8, "train.zero_stage": 2}
    pretraining["data.render_size"] = RENDERED_SHAPES["render_size"]
    overrides = theta0_overrides(rendered_shapes_dir, model_dir) + [
        f"{k}={v}" for k, v in pretraining.items()
    ]
    config = {
        "theta0": "pretrain-vilt-mini",
        "runs_dir": str(tmp_path / "runs"),
        "theta0_overrides": overrides + ["optim.lr=1e-4", "optim.warmup_steps=2"],
        "data": {"train_examples": 64, "val_examples": 16},
        "train": {"steps": 3, "batch_size": 4, "zero_stage": 2, "val_every": 0},
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config))
    run(
        ["env", f"LOTTERY_THETA0_CACHE={cache}", "deepspeed", "--num_gpus", "2", "--master_port", str(free_port())]
        + ["--module", "lottery", "finetune", "--task", "nlvr2", "--ticket", "dense", "--config", str(tmp_path / "ft.yaml")],
        timeout=900,
    )  # fmt: skip

    (theta0,) = [d for d in cache.iterdir() if (d / "DONE").is_file()]
    records = read_metrics(theta0 / "metrics.jsonl")
    val = {r["step"]: r["val"] for r in records if "val" in r}
    assert {"itm_acc", "mlm_acc"} <= set(val[8]) and "mrfr_loss" not in val[8]
    assert val[8]["loss"] < val[0]["loss"], val
    assert {r["world_size"] for r in records if "val" not in r} == {2}
    assert family_of(theta0 / "model").name == "vilt"

    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    assert "accuracy" in metrics["metrics"] and "accuracy" in metrics["chance"]
    assert metrics["theta0_passed"] is None  # the grounding criteria probe UNITER only
    assert from_finetuned(run_dir / "model").task == "nlvr2"
