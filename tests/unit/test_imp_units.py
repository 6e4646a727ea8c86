"""IMP's bookkeeping in process: run identity, state file, config checks, publishing, fault points."""

from __future__ import annotations

import pytest
import torch

from lottery.config import ConfigError, ImpConfig, load_config
from lottery.faults import fault_point
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketError, TicketMeta, TicketStore
from lottery.train.imp import check_config
from lottery.train.imp_state import ImpState, round_alias, run_dir_for, run_identity
from lottery.train.publish import closest_round, publish


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
