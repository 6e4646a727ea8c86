"""IMP's bookkeeping in process: run identity, state file, config checks, publishing, fault points."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import save_tiny

from lottery.config import ConfigError, ImpConfig, load_config
from lottery.faults import fault_point
from lottery.imp.checks import check_config
from lottery.imp.state import ImpState, round_alias, run_dir_for, run_identity
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketError, TicketMeta, TicketStore
from lottery.tickets.publish import closest_round, publish, publish_all


def config(*overrides: str) -> ImpConfig:
    return load_config("imp-uniter-mini", list(overrides), cls=ImpConfig)


def test_the_run_directory_depends_on_what_decides_the_masks_only():
    base = run_identity(config(), "t0")
    assert run_identity(config("train.val_every=7", "runs_dir=elsewhere", "imp.publish={}"), "t0") == base
    assert run_identity(config("train.stop_after_steps=3", "train.ckpt_every=1"), "t0") == base
    assert run_identity(config("imp.schedule=[0.2, 0.4]"), "t0") != base
    assert run_identity(config("train.steps=51"), "t0") != base
    assert run_identity(config(), "another theta0") != base
    assert run_dir_for(config("imp.method=random"), "t0").name.startswith("random-")


def test_state_refuses_a_run_made_from_another_theta0(tmp_path):
    state = ImpState(theta0="aaaa", rounds_done=2, early_stops={"1": 40})
    state.save(tmp_path)
    assert ImpState.load(tmp_path, "aaaa") == state
    with pytest.raises(RuntimeError, match="made from theta0 aaaa"):
        ImpState.load(tmp_path, "bbbb")
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="state.json: not an IMP state file"):
        ImpState.load(tmp_path, "aaaa")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("imp.method=snip", "imp.method: 'snip' is not one of"),
        ("imp.schedule=[0.5, 0.3]", "must be increasing"),
        ("imp.schedule=[0.5, 1.0]", "must be increasing"),
        ("imp.rewind_step=50", "imp.rewind_step: 50 must be in"),
        ("imp.early_bird_threshold=0.1", "needs imp.early_bird_every"),
        ("imp.objective=vqa2", "imp.objective: 'vqa2' is not one of"),
        (
            ("imp.objective=vqa", "imp.rewind_step=1"),
            "a downstream objective \\(vqa\\) rewinds to theta0 only",
        ),
    ],
)
def test_bad_imp_configs_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(config(*((override,) if isinstance(override, str) else override)))


def _masks(pruned: int) -> MaskSet:
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask.view(-1)[:pruned] = False
    return MaskSet({"w": mask}, ("w",))


def test_publish_takes_the_closest_round_and_keeps_its_id(tmp_path, capsys):
    run = tmp_path / "run"
    store = TicketStore(run / "masks")
    meta = TicketMeta(family="uniter", model="tiny", method="imp", tasks=("itm",))
    ids = {r: store.put(_masks(4 * r), meta, alias=round_alias(r)) for r in (1, 2, 3)}  # 20/40/60%
    assert closest_round(run, 0.45) == ("round_02", pytest.approx(0.4))
    assert closest_round(run, 0.5)[0] == "round_02"  # a tie goes to the earlier round
    published = publish(run, 0.6, "tiny/s60", tmp_path / "store")
    assert published == ids[3] == TicketStore(tmp_path / "store").resolve("tiny/s60")
    assert "published tiny/s60" in capsys.readouterr().out
    assert publish_all(run, {0.6: "tiny/b", 0.2: "tiny/a"}, tmp_path / "store") == {
        "tiny/a": ids[1],
        "tiny/b": ids[3],
    }
    with pytest.raises(TicketError, match="no round masks"):
        closest_round(tmp_path / "empty", 0.6)


def test_a_fault_point_only_fires_on_the_named_hit(monkeypatch):
    monkeypatch.setenv("LOTTERY_FAULT", "somewhere.else@1")
    fault_point("here")  # not named: nothing happens
    monkeypatch.setenv("LOTTERY_FAULT", "here@x")
    with pytest.raises(ValueError, match="expected name@count"):
        fault_point("here")


def test_sweep_parts_split_a_grid_and_name_bad_input():
    from lottery.config import ConfigError
    from lottery.train.sweep import parse_part

    assert parse_part("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError, match="--part"):
            parse_part(bad)


def test_a_sweep_names_each_job_by_its_tickets_id_not_its_alias(tmp_path):
    """An alias re-published over a new ticket must make a new job, not a 'done before'."""
    from lottery.train.finetune import run_dir_for as finetune_run_dir
    from lottery.train.sweep import resolve_tickets, sweep_configs

    store = TicketStore(tmp_path / "store")
    meta = TicketMeta(family="uniter", model="tiny", method="imp")
    first = store.put(MaskSet({"w": torch.tensor([True, False] * 8)}), meta)
    second = store.put(MaskSet({"w": torch.tensor([False, True] * 8)}), meta)
    overrides = [f"store={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}"]
    store.alias("x/s60", first)
    before = resolve_tickets(sweep_configs(["vqa"], ["x/s60", "dense"], overrides=overrides))
    store.alias("x/s60", second)
    after = resolve_tickets(sweep_configs(["vqa"], ["x/s60", "dense"], overrides=overrides))
    assert [c.ticket for c in before] == [first, "dense"] and after[0].ticket == second
    assert finetune_run_dir(before[0]) != finetune_run_dir(after[0])
    assert finetune_run_dir(before[0]).name.startswith(f"vqa-{first[:12]}-theta0-")
    assert finetune_run_dir(before[1]) == finetune_run_dir(after[1])


def test_a_later_round_takes_only_the_rewind_point_round_0_saved(tmp_path):
    """A model directory built where the point should be (ensure_model from BERT) is not the point."""
    from lottery.imp.rewind import require_rewind_point

    with pytest.raises(RuntimeError, match=f"rewind point {tmp_path / 'rewind'} is missing: .* step 3"):
        require_rewind_point(tmp_path, 3)
    save_tiny(tmp_path / "rewind")  # a complete model directory, but not written as a rewind point
    with pytest.raises(RuntimeError, match="rewind point .* has no rewind.json"):
        require_rewind_point(tmp_path, 3)
    (tmp_path / "rewind" / "rewind.json").write_text(json.dumps({"step": 2, "world_size": 1}))
    with pytest.raises(RuntimeError, match="holds step 2, this run rewinds to step 3"):
        require_rewind_point(tmp_path, 3)
    (tmp_path / "rewind" / "rewind.json").write_text(json.dumps({"step": 3, "world_size": 1}))
    assert require_rewind_point(tmp_path, 3) == tmp_path / "rewind"


def test_the_rewind_point_is_replaced_unless_this_round_0_wrote_it(tmp_path):
    """A point from another world size, or with no record, is stale: the new one replaces it."""
    from lottery.imp.rewind import _write_rewind_point, rewind_record
    from lottery.models.uniter import from_pretrained

    theta0 = save_tiny(tmp_path / "theta0")
    (theta0 / "vocab.txt").write_text("[PAD]\n")
    weights = {k: v + 1.0 for k, v in from_pretrained(theta0).state_dict().items()}
    save_tiny(tmp_path / "run" / "rewind", seed=1)  # stale: no record
    _write_rewind_point(weights, theta0, tmp_path / "run", 2)
    assert rewind_record(tmp_path / "run") == {"step": 2, "world_size": 1}
    saved = from_pretrained(tmp_path / "run" / "rewind").state_dict()
    assert all(torch.equal(saved[k], weights[k]) for k in saved)
    before = (tmp_path / "run" / "rewind" / "model.safetensors").stat().st_mtime_ns
    _write_rewind_point({}, theta0, tmp_path / "run", 2)  # written by this round 0: kept as is
    assert (tmp_path / "run" / "rewind" / "model.safetensors").stat().st_mtime_ns == before


def test_every_rank_0_site_of_imp_is_listed_in_its_docstring_and_can_be_injected(tmp_path, monkeypatch):
    """The site names are the interface of LOTTERY_RAISE: each one in the code is documented, and
    one process reaching a site raises the injected fault there."""
    import re
    from pathlib import Path

    import lottery.imp.run as imp_module
    from lottery.faults import InjectedFault
    from lottery.imp.run import ImpRun

    sources = [Path(imp_module.__file__), Path(imp_module.__file__).with_name("rewind.py")]
    used = {name for path in sources for name in re.findall(r'what="(imp\.[a-z_]+)"', path.read_text())}
    listed = set(re.findall(r"``(imp\.[a-z_]+)``:", imp_module.__doc__ or ""))
    assert used == listed and {"imp.state", "imp.prune", "imp.publish", "imp.config"} <= used
    run = ImpRun(config(f"runs_dir={tmp_path}"), None, tmp_path, "t0", tmp_path / "run")  # type: ignore[arg-type]
    monkeypatch.setenv("LOTTERY_RAISE", "imp.state")
    with pytest.raises(InjectedFault, match="injected fault at imp.state"):
        run._state()
    monkeypatch.setenv("LOTTERY_RAISE", "imp.config")
    with pytest.raises(InjectedFault, match="imp.config"):
        run.run()
    assert not (tmp_path / "run" / "config.yaml").exists()
