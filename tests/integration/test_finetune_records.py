"""What a fine-tune records: the ticket it trained (defect 7), a model directory that loads back (defect
11) and whether its theta0 passed its criteria (defect 12).

The fine-tunes run in this process (one rank, gloo, DeepSpeed ZeRO-0), so a test can move an alias
while the run is under way; a tiny UNITER (hidden 32, MiniLM's tokenizer) on a tiny shapes world keeps
theta0 and each fine-tune to seconds. Run under `flock /tmp/vl-cpu.lock`: it trains.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import free_port

from lottery import dist
from lottery.config import FinetuneConfig, load_config
from lottery.data.world import CLASS_NAMES
from lottery.models.uniter import (
    UniterConfig,
    UniterForPretraining,
    from_pretrained,
    save_pretrained,
    tokenizer_files,
)
from lottery.models.uniter import load_config as load_model_config
from lottery.run_record import run_digest
from lottery.tickets import TicketStore
from lottery.train.step import RunHooks

pytestmark = pytest.mark.distributed

FEAT_DIM = 32


def tiny_uniter(out: Path) -> Path:
    """A 2-layer, hidden-32 UNITER with MiniLM's vocabulary and tokenizer, for the tiny world."""
    files = tokenizer_files("minilm")
    vocab = sum(1 for _ in files["vocab.txt"].open())
    config = UniterConfig(
        name="tiny-minilm-vocab",
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        img_dim=FEAT_DIM,
        num_region_classes=len(CLASS_NAMES),
    )
    torch.manual_seed(0)
    return save_pretrained(UniterForPretraining(config), out, extra_files=files)


def theta0_overrides(root: Path) -> list[str]:
    values = {
        "data.dir": root / "shapes",
        "data.train_samples": 128,
        "data.val_samples": 32,
        "data.samples_per_shard": 32,
        "data.feat_dim": FEAT_DIM,
        "data.num_workers": 0,
        "data.curriculum": "[]",
        "model.dir": root / "tiny",
        "train.steps": 2,
        "train.batch_size": 4,
        "train.val_batches": 1,
        "train.val_every": 2,
        "train.ckpt_every": 2,
        "train.zero_stage": 0,
    }
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict]:
    """One rank's environment, a theta0 cache with the tiny theta0 built, and two tickets cut from it."""
    from lottery.tickets.jobs import cut_ticket
    from lottery.train.theta0 import ensure_theta0

    root = tmp_path_factory.mktemp("finetune-records")
    tiny_uniter(root / "tiny")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1",
        }.items():
            patch.setenv(key, value)
        patch.setenv("MASTER_ADDR", "127.0.0.1")
        patch.setenv("MASTER_PORT", str(free_port()))
        patch.setenv("LOTTERY_THETA0_CACHE", str(root / "theta0-cache"))
        dist.init()
        overrides = theta0_overrides(root)
        theta0_model = ensure_theta0(
            load_config("pretrain-uniter-mini", overrides)
        )  # as the fine-tunes load it
        store = TicketStore(root / "store")
        first = cut_ticket(theta0_model, "magnitude", 0.5, store, alias="tiny/s50")
        other = cut_ticket(theta0_model, "random", 0.3, store, seed=1)
        yield {"root": root, "overrides": overrides, "model": theta0_model, "first": first, "other": other}
        dist.shutdown()


def config(world: dict, name: str, **changes: object) -> FinetuneConfig:
    values = {
        "runs_dir": world["root"] / name,
        "task": "vqa",
        "theta0_overrides": world["overrides"],
        "store": world["root"] / "store",
        "data.train_examples": 32,
        "data.train_images": 0,
        "data.val_examples": 8,
        "train.steps": 2,
        "train.batch_size": 4,
        "train.val_every": 0,
        "train.zero_stage": 0,
        "verify_every": 1,
        **changes,
    }
    overrides = [f"{key}={json.dumps(v) if isinstance(v, list) else v}" for key, v in values.items()]
    return load_config(None, overrides, cls=FinetuneConfig)


def run_finetune(cfg: FinetuneConfig, hooks: RunHooks | None = None) -> tuple[dict, Path]:
    from lottery.train.finetune import finetune, run_dir_for

    result = finetune(cfg, keep_process_group=True, hooks=hooks)
    out = run_dir_for(cfg)
    return result, out


def test_metrics_name_the_ticket_trained_even_when_its_alias_moves_during_the_run(world):
    """Defect 7: the alias is resolved once; metrics.json must not re-resolve it at the end."""
    store = TicketStore(world["root"] / "store")
    store.alias("tiny/s50", world["first"])

    def move_alias(engine) -> None:  # after the ticket is installed, before the first step
        store.alias("tiny/s50", world["other"])

    cfg = config(world, "moved", ticket="tiny/s50", save_model="false")
    try:
        _, out = run_finetune(cfg, RunHooks(on_start=move_alias))
    finally:
        store.alias("tiny/s50", world["first"])
    # the one run record every job writes: its config first, DONE (the identity digest) last
    assert load_config(str(out / "config.yaml"), [], cls=FinetuneConfig) == cfg
    assert (out / "DONE").read_text() == run_digest(cfg) + "\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ticket_meta"]["id"] == world["first"], (
        "metrics.json names another ticket than the one trained"
    )
    assert metrics["ticket_meta"]["method"] == "magnitude"
    assert abs(metrics["sparsity"] - store.load(world["first"]).sparsity) < 1e-9


def test_a_finetuned_model_directory_loads_back_with_identical_weights_and_outputs(world):
    """Defect 11: config.json of `model/` used to carry keys UniterConfig refuses, so nothing loaded it."""
    from lottery.tasks.packing import pack
    from lottery.train.weights import full_state_dict

    captured: dict = {}

    def keep_final(engine) -> None:
        captured["state"] = full_state_dict(engine)
        captured["module"] = engine.module

    _, out = run_finetune(config(world, "saved", ticket="tiny/s50"), RunHooks(on_done=keep_final))
    model_dir = out / "model"
    assert load_model_config(model_dir) == load_model_config(world["model"])
    from lottery.models.uniter import from_finetuned

    loaded = from_finetuned(model_dir)
    assert loaded.task == "vqa" and set(loaded.state_dict()) == set(captured["state"])
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, captured["state"][name]), name
    answers = json.loads((model_dir / "task.json").read_text())["answers"]
    assert len(answers) == loaded.head[-1].out_features > 1
    generator = torch.Generator().manual_seed(0)
    ids = [
        torch.randint(1, 1000, (7,), generator=generator),
        torch.randint(1, 1000, (5,), generator=generator),
    ]
    feats = [torch.randn(3, FEAT_DIM, generator=generator), torch.randn(4, FEAT_DIM, generator=generator)]
    boxes = [torch.rand(3, 7, generator=generator), torch.rand(4, 7, generator=generator)]
    packed = pack(ids, feats, boxes)
    trained = captured["module"].eval()
    with torch.no_grad():
        want = trained.head(trained.pooled(trained.uniter(**packed)))
        got = loaded.eval().head(loaded.pooled(loaded.uniter(**packed)))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match=r"is a fine-tuned vqa model \(backbone.*from_finetuned"):
        from_pretrained(model_dir)


def test_a_theta0_that_failed_its_criteria_is_said_and_recorded_in_the_metrics(world, capsys):
    """Defect 12: the 2-step theta0 fails its criteria; the fine-tune must say so and record it."""
    _, out = run_finetune(config(world, "verdict", save_model="false"))
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics.get("theta0_passed") is False, "metrics.json does not say its theta0 failed"
    assert metrics["theta0_dir"] == str(world["model"].parent)
    criteria = json.loads((world["model"].parent / "criteria.json").read_text())["criteria"]
    failed = [row["name"] for row in criteria if not row["passed"]]
    assert failed and metrics["theta0_failed"] == failed
    assert f"theta0 {world['model'].parent} FAILED its criteria ({', '.join(failed)})" in printed


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_finetune_records_its_training_curve_and_reports_it_to_csv(world):
    """metrics.json holds the loss every log_every steps; train.report_to=csv writes it and the
    validations through DeepSpeed's CSV monitor, under the run directory."""
    import csv

    cfg = config(
        world,
        "tracked",
        **{"train.steps": 3, "train.log_every": 1, "train.val_every": 2},
        **{"train.report_to": "csv"},
    )
    result, out = run_finetune(cfg)
    assert [point["step"] for point in result["train_curve"]] == [1, 2, 3]
    assert all(point["loss"] > 0 for point in result["train_curve"])
    files = out / "csv" / out.name
    with (files / "train_loss.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["step", "loss"] and [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([p["loss"] for p in result["train_curve"]])
    val_files = sorted(files.glob("val_*.csv"))
    assert val_files, sorted(p.name for p in files.iterdir())
    with val_files[0].open() as handle:
        assert [int(r[0]) for r in list(csv.reader(handle))[1:]] == [2, 3]  # val_every, and the end
