"""`lottery reproduce`: every stage through the real launchers at a CI budget, then the same command
again, which finds everything done and rewrites the tables without training anything."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from conftest import run, theta0_overrides

pytestmark = pytest.mark.distributed

TASKS = ("snli-ve",)  # one task: every stage and table still runs, in CI time


def study_overrides(shapes_dir: Path, model_dir: Path) -> list[str]:
    # JSON lists: YAML flow sequences whose items may hold brackets (data.curriculum=[])
    theta0 = f"theta0_overrides={json.dumps(theta0_overrides(shapes_dir, model_dir))}"
    rounds = [
        "train.steps=2",
        "train.val_every=2",
        "train.ckpt_every=2",
        "train.batch_size=8",
        "train.val_batches=2",
    ]
    return [
        f"imp_overrides={json.dumps([theta0, *rounds])}",
        "task_imp_overrides=[train.steps=2]",
        f"tasks=[{', '.join(TASKS)}]",
        "finetune_overrides=[train.steps=2, data.train_examples=64, data.train_images=32, "
        "data.val_examples=32, data.val_images=4]",
    ]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_reproduce_quick_writes_both_tables_and_a_rerun_redoes_nothing(
    tmp_path, shapes_dir, mini_model_dir, theta0_cache, deepspeed_ops, monkeypatch
):
    monkeypatch.setenv("LOTTERY_THETA0_CACHE", str(theta0_cache))
    out = tmp_path / "study"
    command = [sys.executable, "-m", "lottery", "reproduce", "--quick", "--out", str(out)]
    command += study_overrides(shapes_dir, mini_model_dir)
    first = run(command, timeout=900)
    assert "Table 1 sparsity of snli-ve" in first.stdout

    for name in ("study.md", "table1.csv", "table2.csv", "transfer.csv", "table1.png", "table2.png"):
        assert (out / name).is_file(), name
    # every cell measured: the universal ticket at each sparsity, and Table 1's four variants, per task
    measured = {(round(float(r["sparsity"]), 2), r["task"]) for r in rows(out / "table2.csv") if r["mean"]}
    assert {(s, t) for s in (0.5, 0.6, 0.7, 0.8) for t in TASKS} <= measured
    measured = {(r["row"], r["task"]) for r in rows(out / "table1.csv") if r["mean"]}
    assert {(v, t) for v in ("IMP", "random", "theta0'", "theta0''") for t in TASKS} <= measured
    study = (out / "study.md").read_text()
    assert "Verdicts" in study and "theta0 on seeds [0]" in study

    finished = sorted(p.parent for p in (out / "runs" / "finetune").rglob("DONE"))
    second = run(command, timeout=600)
    assert "IMP on pretrain: done before" in second.stdout
    assert all(f"IMP on {task}: done before" in second.stdout for task in TASKS)
    assert sorted(p.parent for p in (out / "runs" / "finetune").rglob("DONE")) == finished
    logs = "".join(p.read_text() for p in (out / "logs").glob("finetune-part*.log"))
    assert "running" not in logs and "done before" in logs
