"""GPU smoke check: a 2-round IMP and a fine-tune under bf16 at ZeRO 0 and 3, then exact zeros on disk.

Skipped without CUDA. On a GPU machine: `pytest -q -s tests/gpu` (under 5 minutes on one GPU). Each
check prints one line `GPU <check>: ok|FAILED ...`, so a run on a lent GPU reads at a glance.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from conftest import run, theta0_overrides
from safetensors.torch import load_file

from lottery.tickets import TicketStore

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _say(check: str, ok: bool, detail: str = "") -> None:
    print(f"GPU {check}: {'ok' if ok else 'FAILED'} {detail}".rstrip(), flush=True)
    assert ok, f"{check}: {detail}"


@pytest.mark.parametrize("zero", [0, 3])
def test_bf16_imp_and_finetune_keep_the_tickets_zeros(
    tmp_path, shapes_dir, mini_model_dir, theta0_cache, zero
):
    env = ["env", f"LOTTERY_THETA0_CACHE={theta0_cache}"]
    imp = {
        "runs_dir": str(tmp_path / "imp"),
        "theta0_overrides": theta0_overrides(shapes_dir, mini_model_dir),
        "train": {
            "steps": 4,
            "batch_size": 8,
            "zero_stage": zero,
            "precision": "bf16",
            "val_every": 4,
            "val_batches": 2,
            "ckpt_every": 2,
        },
        "imp": {"schedule": [0.5], "publish": {0.5: "gpu/s50"}, "store": str(tmp_path / "store")},
    }
    (tmp_path / "imp.yaml").write_text(yaml.safe_dump(imp))
    proc = run(
        env + [sys.executable, "-m", "lottery", "imp", "--config", str(tmp_path / "imp.yaml")], timeout=900
    )
    rewinds = [line for line in proc.stdout.splitlines() if "largest |weight - start * mask|" in line]
    _say(
        f"zero{zero} bf16 IMP rewind check",
        len(rewinds) == 2 and all(r.endswith("= 0") for r in rewinds),
        str(rewinds),
    )
    masks = TicketStore(tmp_path / "store").load("gpu/s50").masks
    _say(f"zero{zero} bf16 IMP ticket", abs(masks.sparsity - 0.5) < 1e-3, f"sparsity {masks.sparsity:.4f}")

    finetune = {
        "runs_dir": str(tmp_path / "ft"),
        "theta0_overrides": theta0_overrides(shapes_dir, mini_model_dir),
        "data": {"train_examples": 64, "val_examples": 16},
        "train": {"steps": 3, "batch_size": 4, "zero_stage": zero, "precision": "bf16", "val_every": 0},
        "verify_every": 1,
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(finetune))
    run(
        env
        + [sys.executable, "-m", "lottery", "finetune", "--task", "vqa", "--ticket", "gpu/s50"]
        + ["--store", str(tmp_path / "store"), "--config", str(tmp_path / "ft.yaml")],
        timeout=900,
    )
    (run_dir,) = (tmp_path / "ft").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    _say(f"zero{zero} bf16 fine-tune ran", metrics["precision"] == "bf16", f"metrics {metrics['metrics']}")
    saved = load_file(run_dir / "model" / "model.safetensors")
    revived = sum(int(torch.count_nonzero(saved[name][~mask])) for name, mask in masks.masks.items())
    _say(f"zero{zero} bf16 saved model holds the ticket's zeros", revived == 0, f"{revived} non-zero pruned")
