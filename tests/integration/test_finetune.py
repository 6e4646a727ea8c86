"""`lottery finetune` through the real launcher: a ticket kept at 0.0 under ZeRO-3, a foreign ticket refused.

theta0 is the session's 4-step pre-training (conftest); fine-tunes are a few steps on a few examples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run, theta0_overrides, torchrun
from safetensors.torch import load_file
from tiny import save_tiny

from lottery.tickets import TicketStore
from lottery.train.starts import shuffled

pytestmark = pytest.mark.distributed


def write_config(path: Path, shapes_dir: Path, model_dir: Path, zero: int) -> Path:
    config = {
        "runs_dir": str(path.parent / "runs"),
        "theta0_overrides": theta0_overrides(shapes_dir, model_dir),
        "data": {"train_examples": 64, "val_examples": 16},
        "train": {"steps": 3, "batch_size": 4, "zero_stage": zero, "val_every": 0},
        "verify_every": 1,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def finetune(
    config: Path, cache: Path, store: Path, ticket: str, *, ranks: int = 2, check: bool = True, extra=()
):
    prefix = torchrun(ranks) if ranks > 1 else [sys.executable]
    cmd = [
        "env",
        f"LOTTERY_THETA0_CACHE={cache}",
        *prefix,
        "-m",
        "lottery",
        "finetune",
        "--task",
        "nlvr2",
        *extra,
    ]
    cmd += ["--ticket", ticket, "--store", str(store), "--config", str(config)]
    return run(cmd, timeout=900, check=check)


def theta0_model(cache: Path) -> Path:
    (model,) = [d / "model" for d in cache.iterdir() if (d / "DONE").is_file()]
    return model


@pytest.mark.parametrize(
    ("zero", "extra"),
    [(3, ()), (2, ("--adversarial",)), (0, ("train.precision=bf16", "train.grad_accum=2"))],
    ids=["zero3", "zero2-adversarial", "zero0-bf16"],
)
def test_a_60_percent_ticket_stays_exactly_zero_in_the_saved_model(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache, zero, extra
):
    """verify_every=1: every rank also checks after every step that no pruned weight moved."""
    config = write_config(tmp_path / "ft.yaml", shapes_dir, mini_model_dir, zero=zero)
    store = tmp_path / "store"
    # theta0 first (finetune builds it when missing; here the ticket must be cut from it beforehand)
    run(
        ["env", f"LOTTERY_THETA0_CACHE={theta0_cache}", sys.executable, "-m", "lottery", "theta0"]
        + theta0_overrides(shapes_dir, mini_model_dir)
    )
    model = theta0_model(theta0_cache)
    run(
        [sys.executable, "-m", "lottery", "ticket", "cut", "--model", str(model), "--method", "magnitude"]
        + ["--sparsity", "0.6", "--store", str(store), "--alias", "mini/s60"]
    )
    proc = finetune(config, theta0_cache, store, "mini/s60", extra=extra)
    assert "training under ticket" in proc.stdout and "nlvr2 val: accuracy=" in proc.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["adversarial"] == ("--adversarial" in extra) and metrics["world_size"] == 2
    assert metrics["precision"] == ("bf16" if "train.precision=bf16" in extra else "fp32")
    # every step is grad_accum micro-batches (it was one, so DeepSpeed stepped every grad_accum-th step)
    assert metrics["optimizer_steps"] == metrics["steps"] == 3
    assert metrics["grad_accum"] == (2 if "train.grad_accum=2" in extra else 1)
    assert metrics["ticket_meta"]["id"] == TicketStore(store).resolve("mini/s60")
    assert metrics["ticket_meta"]["method"] == "magnitude" and abs(metrics["sparsity"] - 0.6) < 1e-6
    masks = TicketStore(store).load("mini/s60").masks
    saved = load_file(run_dir / "model" / "model.safetensors")
    before = load_file(model / "model.safetensors")
    for name, mask in masks.masks.items():
        assert torch.count_nonzero(saved[name][~mask]) == 0, name
    moved = [n for n, m in masks.masks.items() if m.any() and not torch.equal(saved[n][m], before[n][m])]
    assert moved, "the kept weights must have trained"


def test_a_ticket_cut_from_another_model_is_refused_before_training(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    config = write_config(tmp_path / "ft.yaml", shapes_dir, mini_model_dir, zero=0)
    store = tmp_path / "store"
    tiny = save_tiny(tmp_path / "tiny")
    run(
        [sys.executable, "-m", "lottery", "ticket", "cut", "--model", str(tiny), "--method", "magnitude"]
        + ["--sparsity", "0.5", "--store", str(store), "--alias", "tiny/s50"]
    )
    proc = finetune(config, theta0_cache, store, "tiny/s50", ranks=1, check=False)
    assert proc.returncode != 0
    assert "fingerprint" in proc.stderr and "tiny" in proc.stderr
    assert "finetune nlvr2" not in proc.stderr, "no step may run under a refused ticket"


def test_shuffled_start_keeps_every_tensors_values_and_changes_their_order():
    gen = torch.Generator().manual_seed(0)
    state = {
        "uniter.a.weight": torch.randn(8, 4, generator=gen),
        "uniter.b.bias": torch.randn(16, generator=gen),
    }
    mixed = shuffled(state, seed=1)
    for name, value in state.items():
        assert torch.equal(torch.sort(mixed[name].reshape(-1)).values, torch.sort(value.reshape(-1)).values)
        assert not torch.equal(mixed[name], value)
    assert all(torch.equal(mixed[n], shuffled(state, seed=1)[n]) for n in state)
    assert any(not torch.equal(mixed[n], shuffled(state, seed=2)[n]) for n in state)
