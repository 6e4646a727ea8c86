"""LXMERT pre-training on 2 ranks, ZeRO-2, through the real deepspeed launcher: it learns, and it ends
with a model directory of its family that stock transformers opens."""

from __future__ import annotations

import pytest
from conftest import free_port, quick_overrides, run

from lottery.train.metrics import read_metrics

pytestmark = pytest.mark.distributed


def test_lxmert_two_ranks_zero2_lowers_val_loss_on_its_own_tasks(tmp_path, shapes_dir, deepspeed_ops):
    from transformers import AutoModelForPreTraining

    from lottery.models.families import family_of

    run_dir, model_dir = tmp_path / "run", tmp_path / "lxmert-mini"  # built by rank 0 on first use
    run(
        ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "--module", "lottery", "pretrain"]
        + ["--config", "pretrain-lxmert-mini"]
        + quick_overrides(
            run_dir, shapes_dir, model_dir, **{"train.zero_stage": 2, "train.val_at_start": True}
        )
    )
    records = read_metrics(run_dir / "metrics.jsonl")
    val = {r["step"]: r["val"] for r in records if "val" in r}
    assert {"itm_acc", "mlm_acc", "mrfr_loss", "obj_acc", "obj_loss"} <= set(val[12]), val[12]
    assert "mrckl_loss" not in val[12] and "wra_pos" not in val[12]
    assert val[12]["loss"] < val[0]["loss"], val
    assert {r["world_size"] for r in records if "val" not in r} == {2}
    assert {task for r in records if "losses" in r for task in r["losses"]} <= {"itm", "mlm", "mrfr", "obj"}
    assert family_of(run_dir / "model").name == "lxmert"
    assert (
        type(AutoModelForPreTraining.from_pretrained(str(run_dir / "model"))).__name__
        == "LxmertForPreTraining"
    )
