"""LXMERT on 2 ranks, ZeRO-2, through the real deepspeed launcher, in one job: `lottery finetune --task vqa`
first pre-trains its theta0 (lxmert-mini on LXMERT's own tasks, the job's ranks and stage), then
fine-tunes VQA from it. One launch covers both, to keep the integration tier inside CI's budget."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import free_port, run, theta0_overrides

from lottery.train.metrics import read_metrics

pytestmark = pytest.mark.distributed


def test_lxmert_pretrains_and_fine_tunes_vqa_on_two_ranks_zero2(tmp_path, shapes_dir, deepspeed_ops):
    from transformers import AutoModelForPreTraining

    from lottery.models.families import family_of

    cache, model_dir = tmp_path / "theta0-cache", tmp_path / "lxmert-mini"  # both built by the job
    pretraining = {"train.steps": 8, "train.val_every": 8, "train.ckpt_every": 8, "train.zero_stage": 2}
    overrides = theta0_overrides(shapes_dir, model_dir) + [f"{k}={v}" for k, v in pretraining.items()]
    config = {
        "theta0": "pretrain-lxmert-mini",
        "runs_dir": str(tmp_path / "runs"),
        "theta0_overrides": overrides + ["optim.lr=1e-4", "optim.warmup_steps=2"],
        "data": {"train_examples": 64, "val_examples": 16},
        "train": {"steps": 3, "batch_size": 4, "zero_stage": 2, "val_every": 0},
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config))
    proc = run(
        ["env", f"LOTTERY_THETA0_CACHE={cache}", "deepspeed", "--num_gpus", "2", "--master_port", str(free_port())]
        + ["--module", "lottery", "finetune", "--task", "vqa", "--ticket", "dense", "--config", str(tmp_path / "ft.yaml")],
        timeout=900,
    )  # fmt: skip
    assert "grounding criteria are measured for UNITER only" in proc.stdout + proc.stderr

    (theta0,) = [d for d in cache.iterdir() if (d / "DONE").is_file()]
    records = read_metrics(theta0 / "metrics.jsonl")
    val = {r["step"]: r["val"] for r in records if "val" in r}
    assert {"itm_acc", "mlm_acc", "mrfr_loss", "obj_acc"} <= set(val[8]) and "mrckl_loss" not in val[8]
    assert val[8]["loss"] < val[0]["loss"], val
    assert {r["world_size"] for r in records if "val" not in r} == {2}
    assert family_of(theta0 / "model").name == "lxmert"
    assert (
        type(AutoModelForPreTraining.from_pretrained(str(theta0 / "model"))).__name__
        == "LxmertForPreTraining"
    )

    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    assert "vqa_score" in metrics["metrics"] and "vqa_score" in metrics["chance"]
    assert metrics["theta0_passed"] is None  # not measured for LXMERT, and not called passed
    from lottery.models.lxmert.finetuned import from_finetuned

    assert from_finetuned(run_dir / "model").task == "vqa"
