"""`lottery imp` on the lxmert family: the same loop as UNITER's, keyed by theta0's `model.family`.

One single-process IMP (2-step theta0, two 2-step pruned rounds rewinding to step 1 of round 0) on a
tiny shapes world, run once for the module through the command line, as a user runs it; the tests read
what it left. A run that took UNITER's defaults would record family "uniter", prune the BERT-tickets
scope (the language layers only: 24 of lxmert-mini's 69 prunable weights) or fail to load its own
theta0 and rewind point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import LAUNCH_ENV

from lottery.config import ConfigError, ImpConfig, load_config
from lottery.models.families import family_of
from lottery.models.lxmert import LXMERT_SCOPE, from_pretrained
from lottery.tickets import TicketError, TicketStore

WORLD = {"seed": 0, "train_samples": 256, "val_samples": 32, "samples_per_shard": 128, "feat_dim": 64}
LXMERT_MINI_PRUNABLE = 4 * 6 + 2 * 16 + 2 * 6 + 1  # language, cross-modality, relationship layers, pooler
ALIAS = "lxmert-mini/test/s60"


def theta0_overrides(shapes: Path, model_dir: Path) -> list[str]:
    """A 2-step lxmert theta0 on the tiny world; `model_dir` is missing, so it is built from MiniLM."""
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


REPO = Path(__file__).resolve().parents[2]


def lottery(*args: str, cache: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m lottery ...` in a process of its own (no launcher: one rank), theta0 cached in `cache`;
    without the launcher variables a test run under a launcher would pass on."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["LOTTERY_THETA0_CACHE"] = str(cache)
    command = [sys.executable, "-m", "lottery", *args]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def lxmert_run(tmp_path_factory) -> SimpleNamespace:
    from lottery.data.shards import ShapesConfig, build_shapes

    root = tmp_path_factory.mktemp("imp-lxmert")
    shapes = build_shapes(root / "shapes", ShapesConfig(**WORLD))
    model_dir = root / "lxmert-mini"
    config = {
        "runs_dir": str(root / "runs"),
        "theta0": "pretrain-lxmert-mini",
        "theta0_overrides": theta0_overrides(shapes, model_dir),
        "tasks": {"mix": {"itm": 2, "mlm": 2, "mrfr": 1, "obj": 1}},
        "optim": {"lr": 1e-4, "warmup_steps": 1},
        "train": {
            "steps": 2,
            "batch_size": 4,
            "val_every": 2,
            "val_batches": 1,
            "ckpt_every": 100,
            "log_every": 1,
        },
        "imp": {
            "schedule": [0.3, 0.6],
            "rewind_step": 1,
            "publish": {0.6: ALIAS},
            "store": str(root / "store"),
        },
    }
    path = root / "imp.yaml"
    path.write_text(yaml.safe_dump(config))
    cache = root / "theta0-cache"
    proc = lottery("imp", "--config", str(path), cache=cache)
    (directory,) = (root / "runs").iterdir()
    (theta0,) = cache.iterdir()
    return SimpleNamespace(
        root=root,
        shapes=shapes,
        model_dir=model_dir,
        theta0=theta0,
        cache=cache,
        directory=directory,
        store=TicketStore(root / "store"),
        masks=TicketStore(directory / "masks"),
        stdout=proc.stdout,
        theta0_overrides=config["theta0_overrides"],
    )


def test_the_published_ticket_is_lxmerts_over_exactly_its_prunable_weights(lxmert_run):
    ticket = lxmert_run.store.load(ALIAS)
    assert ticket.id == lxmert_run.masks.resolve("round_02")
    meta = ticket.meta
    assert (meta.family, meta.model, meta.method) == ("lxmert", "lxmert-mini", "imp")
    assert meta.tasks == ("itm", "mlm", "mrfr", "obj") and meta.imp_round == 2
    prunable = from_pretrained(lxmert_run.model_dir).prunable()
    assert len(prunable) == LXMERT_MINI_PRUNABLE
    assert list(ticket.masks.masks) == prunable
    assert ticket.masks.scope == LXMERT_SCOPE
    assert lxmert_run.masks.load("round_01").meta.family == "lxmert"


def test_each_round_cuts_its_target_and_the_masks_are_nested(lxmert_run):
    first, second = (lxmert_run.masks.load(alias).masks for alias in ("round_01", "round_02"))
    for masks, target in ((first, 0.3), (second, 0.6)):
        assert masks.total - masks.kept == round(target * masks.total)
        assert masks.sparsity == pytest.approx(target, abs=1e-6)
    assert all(not (second.masks[n] & ~first.masks[n]).any() for n in first.masks)


def test_pruned_rounds_start_from_the_lxmert_rewind_point_with_the_pruned_weights_zero(lxmert_run):
    rewind = lxmert_run.directory / "rewind"
    assert family_of(rewind).name == "lxmert"
    assert json.loads((rewind / "rewind.json").read_text()) == {"step": 1, "world_size": 1}
    # the run's own proof, on the engine each round trained: kept weights = the point's, pruned = 0.0
    proofs = [line for line in lxmert_run.stdout.splitlines() if "largest |weight - start * mask|" in line]
    assert len(proofs) == 3 and all(line.endswith("= 0") for line in proofs), proofs
    assert all(f"starts from {rewind}:" in proofs[index] for index in (1, 2)), proofs
    # ... and those zeros come from the mask: the point itself holds nonzero weights there
    point = dict(from_pretrained(rewind).named_parameters())
    theta0 = dict(from_pretrained(lxmert_run.theta0 / "model").named_parameters())
    masks = lxmert_run.masks.load("round_02").masks.masks
    assert all(point[name][~mask].abs().min() > 0 for name, mask in masks.items())
    assert any(not torch.equal(point[name], theta0[name]) for name in masks), (
        "the point is theta0, not step 1"
    )


def test_an_lxmert_theta0_says_it_has_no_criteria_instead_of_a_table(lxmert_run, monkeypatch):
    from lottery.train.theta0 import Theta0Refused, ensure_theta0

    monkeypatch.setattr("lottery.dist.init", lambda: None)  # one process, no group: nothing to join

    assert "grounding criteria are measured for UNITER only; this lxmert theta0 has none" in lxmert_run.stdout
    assert (
        not (lxmert_run.theta0 / "criteria.json").exists()
        and not (lxmert_run.theta0 / "verdict.json").exists()
    )
    assert (lxmert_run.theta0 / "DONE").is_file()
    table = json.loads((lxmert_run.directory / "rounds.json").read_text())
    assert table["theta0_passed"] is None and [row["round"] for row in table["rounds"]] == [0, 1, 2]
    # a job that requires passed criteria cannot have them from this theta0
    overrides = [*lxmert_run.theta0_overrides, "theta0.require_criteria=true"]
    with pytest.raises(Theta0Refused, match="is lxmert, and grounding criteria are measured for UNITER only"):
        ensure_theta0(load_config("pretrain-lxmert-mini", overrides), root=lxmert_run.cache)


def test_a_uniter_ticket_is_refused_by_an_lxmert_run_and_an_lxmert_ticket_by_a_uniter_model(
    lxmert_run, tmp_path
):
    from tiny import save_tiny

    from lottery.tickets.jobs import cut_ticket, verify_ticket

    uniter = save_tiny(tmp_path / "tiny")
    cut_ticket(uniter, "magnitude", 0.5, TicketStore(tmp_path / "store"), alias="tiny/s50")
    overrides = [o for o in lxmert_run.theta0_overrides if not o.startswith("train.")]
    overrides += [
        f"model.dir={lxmert_run.theta0 / 'model'}",
        f"run_dir={tmp_path / 'pretrain'}",
        "train.steps=1",
    ]
    overrides += ["train.batch_size=4", "sparsity.ticket=tiny/s50", f"sparsity.store={tmp_path / 'store'}"]
    proc = lottery(
        "pretrain", "--config", "pretrain-lxmert-mini", *overrides, cache=lxmert_run.cache, check=False
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("lottery: ")]
    assert (
        "fingerprint check failed" in line
        and "(cut from uniter tiny) does not match model lxmert-mini" in line
    )
    with pytest.raises(TicketError, match=r"\(cut from lxmert lxmert-mini\) does not match model tiny"):
        verify_ticket(lxmert_run.store, ALIAS, uniter)


def test_cut_verify_and_starts_read_an_lxmert_directory_by_its_family(lxmert_run, tmp_path):
    from lottery.tickets.jobs import cut_ticket, verify_ticket
    from lottery.train.starts import start_state

    store = TicketStore(tmp_path / "store")
    ticket = store.load(cut_ticket(lxmert_run.model_dir, "magnitude", 0.5, store))
    assert ticket.meta.family == "lxmert" and ticket.masks.scope == LXMERT_SCOPE
    assert len(ticket.masks.masks) == LXMERT_MINI_PRUNABLE
    assert verify_ticket(lxmert_run.store, ALIAS, lxmert_run.theta0 / "model")[-1].endswith(
        f"matches model lxmert-mini ({lxmert_run.theta0 / 'model'})"
    )
    theta0 = start_state("theta0", lxmert_run.theta0 / "model", lxmert_run.model_dir)
    bert = start_state("bert", lxmert_run.theta0 / "model", lxmert_run.model_dir)
    mixed = start_state("shuffled", lxmert_run.theta0 / "model", lxmert_run.model_dir, seed=1)
    assert theta0 and all(name.startswith("lxmert.") for name in theta0)
    assert set(theta0) == set(bert) == set(mixed)
    name = "lxmert.encoder.x_layers.0.visual_attention.att.query.weight"
    assert not torch.equal(theta0[name], bert[name])  # theta0 trained 2 steps from the BERT start
    assert torch.equal(mixed[name].reshape(-1).sort().values, theta0[name].reshape(-1).sort().values)


def imp_config(*overrides: str) -> ImpConfig:
    return load_config("imp-lxmert-mini", list(overrides), cls=ImpConfig)


def test_a_task_mix_lxmert_lacks_is_refused_before_theta0_is_built():
    """imp-uniter-mini's mix on lxmert's theta0: refused by name now, not after a theta0 build."""
    from lottery.imp.checks import check_family

    config = imp_config("tasks.mix={itm: 2, mlm: 2, mrfr: 1, mrckl: 1}")
    with pytest.raises(
        ConfigError,
        match=r"tasks.mix: theta0 pretrain-lxmert-mini is lxmert, which has no task\(s\) \['mrckl'\]",
    ):
        check_family(config, load_config(config.theta0, []))
    check_family(imp_config(), load_config("pretrain-lxmert-mini", []))


def test_the_shipped_lxmert_imp_config_is_the_uniter_one_on_lxmert():
    lxmert, uniter = imp_config(), load_config("imp-uniter-mini", [], cls=ImpConfig)
    theta0 = load_config(lxmert.theta0, [])
    assert theta0.model.family == "lxmert" and set(lxmert.tasks.mix) == {"itm", "mlm", "mrfr", "obj"}
    assert set(lxmert.imp.publish.values()) == {"lxmert-mini/pretrain/s60", "lxmert-mini/pretrain/s70"}
    assert (lxmert.train, lxmert.optim, lxmert.imp.schedule) == (
        uniter.train,
        uniter.optim,
        uniter.imp.schedule,
    )
