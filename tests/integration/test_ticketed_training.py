"""Training under a ticket through the real launcher: read once, broadcast, kept at 0.0, or refused by all ranks."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import free_port, quick_overrides, run
from safetensors.torch import load_file

from lottery.tickets.store import TicketStore

pytestmark = pytest.mark.distributed


def _cut(store, model_dir) -> str:
    run(
        [sys.executable, "-m", "lottery", "ticket", "cut", "--model", str(model_dir), "--method", "magnitude"]
        + ["--sparsity", "0.6", "--store", str(store), "--alias", "mini/s60"]
    )
    return TicketStore(store).resolve("mini/s60")


def _pretrain(run_dir, shapes_dir, model_dir, store, stage):
    cmd = [
        "deepspeed",
        "--num_gpus",
        "2",
        "--master_port",
        str(free_port()),
        "--module",
        "lottery",
        "pretrain",
    ]
    extra = {"train.zero_stage": stage, "sparsity.ticket": "mini/s60", "sparsity.store": store}
    return cmd + quick_overrides(run_dir, shapes_dir, model_dir, **extra, **{"sparsity.verify_every": 1})


def test_pretraining_under_a_ticket_keeps_pruned_weights_zero_in_the_saved_model(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    store = tmp_path / "store"
    ticket_id = _cut(store, mini_model_dir)
    proc = run(_pretrain(tmp_path / "run", shapes_dir, mini_model_dir, store, 3))
    assert f"training under ticket {ticket_id[:12]}" in proc.stdout
    masks = TicketStore(store).load(ticket_id).masks
    before = load_file(mini_model_dir / "model.safetensors")
    after = load_file(tmp_path / "run" / "model" / "model.safetensors")
    for name, mask in masks.masks.items():
        assert torch.count_nonzero(after[name][~mask]) == 0, name
        if mask.any():  # global magnitude may empty a layer (MiniLM's pooler at 60%)
            assert not torch.equal(after[name][mask], before[name][mask]), name


def test_a_corrupted_ticket_stops_every_rank_with_the_failed_check(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    store = tmp_path / "store"
    ticket_id = _cut(store, mini_model_dir)
    path = TicketStore(store).object_path(ticket_id)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    proc = run(_pretrain(tmp_path / "run", shapes_dir, mini_model_dir, store, 2), timeout=300, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "hash check failed" in out and path.name in out
    assert not (tmp_path / "run" / "model").exists()
