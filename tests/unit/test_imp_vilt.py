"""`lottery imp` on the vilt family: patch input from the rendered shapes world, the same IMP loop.

One single-process IMP (2-step theta0, two 2-step pruned rounds rewinding to step 1 of round 0) on a
tiny rendered world, through the command line as a user runs it; the tests read what it left.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_imp_lxmert import lottery

from lottery.models.families import family_of
from lottery.models.vilt import VILT_SCOPE, from_pretrained
from lottery.tickets import TicketStore

WORLD = {
    "seed": 0,
    "train_samples": 256,
    "val_samples": 32,
    "samples_per_shard": 128,
    "feat_dim": 64,
    "render_size": 32,
}
VILT_MINI_PRUNABLE = 6 * 6 + 1  # six layers' Q/K/V, attention output, FFN in and out, and the pooler
ALIAS = "vilt-mini/test/s60"


def theta0_overrides(shapes: Path, model_dir: Path) -> list[str]:
    values = {f"data.{key}": value for key, value in WORLD.items()}
    values.update(
        {
            "data.dir": shapes,
            "data.num_workers": 0,
            "data.curriculum": "[]",
            "model.dir": model_dir,
            "train.steps": 2,
            "train.batch_size": 4,
            "train.val_batches": 1,
            "train.val_every": 2,
            "train.ckpt_every": 2,
        }
    )
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="module")
def vilt_run(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("imp-vilt")
    model_dir = root / "vilt-mini"
    config = {
        "runs_dir": str(root / "runs"),
        "theta0": "pretrain-vilt-mini",
        "theta0_overrides": theta0_overrides(root / "shapes", model_dir),  # both built by the job
        "tasks": {"mix": {"itm": 1, "mlm": 1}},
        "optim": {"lr": 1e-4, "warmup_steps": 1},
        "train": {"steps": 2, "batch_size": 4, "val_every": 2, "val_batches": 1, "ckpt_every": 100},
        "imp": {
            "schedule": [0.3, 0.6],
            "rewind_step": 1,
            "publish": {0.6: ALIAS},
            "store": str(root / "store"),
        },
    }
    path = root / "imp.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = lottery("imp", "--config", str(path), cache=root / "theta0-cache")
    (directory,) = (root / "runs").iterdir()
    return SimpleNamespace(
        model_dir=model_dir,
        directory=directory,
        store=TicketStore(root / "store"),
        masks=TicketStore(directory / "masks"),
        stdout=proc.stdout,
    )


def test_the_published_ticket_is_vilts_over_exactly_its_prunable_weights(vilt_run):
    ticket = vilt_run.store.load(ALIAS)
    meta = ticket.meta
    assert (meta.family, meta.model, meta.method, meta.tasks) == ("vilt", "vilt-mini", "imp", ("itm", "mlm"))
    prunable = from_pretrained(vilt_run.model_dir).prunable()
    assert len(prunable) == VILT_MINI_PRUNABLE and list(ticket.masks.masks) == prunable
    assert ticket.masks.scope == VILT_SCOPE


def test_rounds_cut_their_targets_nested_from_the_vilt_rewind_point(vilt_run):
    first, second = (vilt_run.masks.load(alias).masks for alias in ("round_01", "round_02"))
    for masks, target in ((first, 0.3), (second, 0.6)):
        assert masks.total - masks.kept == round(target * masks.total)
    assert all(not (second.masks[n] & ~first.masks[n]).any() for n in first.masks)
    assert family_of(vilt_run.directory / "rewind").name == "vilt"
    proofs = [line for line in vilt_run.stdout.splitlines() if "largest |weight - start * mask|" in line]
    assert len(proofs) == 3 and all(line.endswith("= 0") for line in proofs), proofs
