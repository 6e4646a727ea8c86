"""Per-tensor health of masks (lottery.sparsity.health) and IMP's round table showing it, on hand-made
masks and a hand-made IMP run directory (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lottery.imp.report import format_rounds, mask_warnings, print_rounds, write_rounds
from lottery.imp.state import round_alias
from lottery.sparsity import health
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketMeta, TicketStore

EXPLAIN = (
    "such a tensor passes on (nearly) its bias alone (a wiped-out pooler makes the pooled output, "
    "and every answer from it, a constant)"
)


def _mask(shape: tuple[int, ...], pruned: int) -> torch.Tensor:
    mask = torch.ones(shape, dtype=torch.bool)
    mask.view(-1)[:pruned] = False
    return mask


def masks(query0: int = 60, ffn0: int = 98, query1: int = 99, pooler: int = 20) -> MaskSet:
    """Two 'layers' of 10x10 tensors and a 4x5 pooler, with the given numbers of weights pruned."""
    return MaskSet(
        {
            "enc.layer.0.query.weight": _mask((10, 10), query0),
            "enc.layer.0.ffn.weight": _mask((10, 10), ffn0),
            "enc.layer.1.query.weight": _mask((10, 10), query1),
            "pooler.weight": _mask((4, 5), pooler),
        },
        ("w",),
    )


def test_per_tensor_sparsity_and_the_tensors_pruned_99_percent_or_more():
    m = masks()
    assert health.WIPED_OUT == 0.99
    assert health.tensor_sparsity(m) == pytest.approx(
        {
            "enc.layer.0.query.weight": 0.60,
            "enc.layer.0.ffn.weight": 0.98,
            "enc.layer.1.query.weight": 0.99,
            "pooler.weight": 1.0,
        }
    )
    # exactly 99% is wiped out, 98% is not; scope order is kept
    assert list(health.wiped_out(m)) == ["enc.layer.1.query.weight", "pooler.weight"]
    assert health.max_tensor(m) == ("pooler.weight", 1.0)
    assert health.summary(m) == {
        "max_tensor": "pooler.weight",
        "max_tensor_sparsity": 1.0,
        "wiped_out": {"enc.layer.1.query.weight": pytest.approx(0.99), "pooler.weight": 1.0},
    }
    assert m.sparsity == pytest.approx(277 / 320)  # 86.6% overall: nothing in it says "pooler gone"
    assert health.wiped_out(masks(query1=98, pooler=19)) == {}
    assert health.wiped_out(m, threshold=0.5) == pytest.approx(health.tensor_sparsity(m))


def test_the_table_groups_layers_aligns_columns_and_marks_wiped_out_tensors():
    assert health.render_table(masks()).splitlines() == [
        "parameter                 shape  kept  total  sparsity",
        "------------------------  -----  ----  -----  --------",
        "enc.layer.0.query.weight  10x10    40    100    60.00%",
        "enc.layer.0.ffn.weight    10x10     2    100    98.00%",
        "",
        "enc.layer.1.query.weight  10x10     1    100    99.00%  !! wiped out",
        "",
        "pooler.weight               4x5     0     20   100.00%  !! wiped out",
    ]


def test_the_warning_is_one_line_naming_each_tensor_and_its_sparsity():
    assert health.warning_text(health.wiped_out(masks()), "round 2's mask") == (
        "WARNING: round 2's mask wipes out 2 prunable tensors (>= 99% of its weights pruned): "
        f"enc.layer.1.query.weight 99.00%, pooler.weight 100.00%; {EXPLAIN}"
    )
    assert health.warning_text({"pooler.weight": 0.9946}) == (
        "WARNING: this ticket wipes out 1 prunable tensor (>= 99% of its weights pruned): "
        f"pooler.weight 99.46%; {EXPLAIN}"
    )
    assert health.warning_text({}) == ""


def _imp_run(root: Path, round_masks: dict[int, MaskSet]) -> Path:
    """An IMP run directory as imp.py leaves it: round.json + metrics.jsonl per round, masks/ store."""
    run = root / "run"
    store = TicketStore(run / "masks")
    for index, m in round_masks.items():
        meta = TicketMeta(family="uniter", model="tiny", method="imp", tasks=("itm",), imp_round=index)
        store.put(m, meta, alias=round_alias(index))
    sparsities = {0: 0.0, **{i: m.sparsity for i, m in round_masks.items()}}
    for index, sparsity in sparsities.items():
        directory = run / "rounds" / round_alias(index)
        directory.mkdir(parents=True)
        (directory / "round.json").write_text(json.dumps({"round": index, "sparsity": sparsity}))
        val = {"itm_acc": 0.9 - 0.1 * index}
        (directory / "metrics.jsonl").write_text(json.dumps({"step": 25, "val": val}) + "\n")
    return run


def test_the_round_table_shows_each_masks_most_pruned_tensor_and_warns_under_it(tmp_path, capsys):
    healthy = masks(query0=30, ffn0=30, query1=30, pooler=6)  # 30% everywhere
    wiped = masks()
    run = _imp_run(tmp_path, {1: healthy, 2: wiped})
    table = write_rounds(run, tmp_path / "no-theta0")
    assert json.loads((run / "rounds.json").read_text()) == json.loads(json.dumps(table))
    rows = table["rounds"]
    assert [(r["round"], r["max_tensor"], r["wiped_out"]) for r in rows] == [
        (0, None, {}),
        (1, "enc.layer.0.query.weight", {}),  # a tie: the first in scope order
        (2, "pooler.weight", {"enc.layer.1.query.weight": pytest.approx(0.99), "pooler.weight": 1.0}),
    ]
    assert [r["max_tensor_sparsity"] for r in rows] == pytest.approx([0.0, 0.30, 1.0])

    lines = format_rounds(table).splitlines()
    assert lines[0].endswith("  max tensor  wiped")
    assert [line[-19:] for line in lines[1:]] == [
        "       0.00%      0",
        "      30.00%      0",
        "     100.00%   2 !!",
    ]
    assert mask_warnings(table) == [
        "WARNING: round 2's mask wipes out 2 prunable tensors (>= 99% of its weights pruned): "
        f"enc.layer.1.query.weight 99.00%, pooler.weight 100.00%; {EXPLAIN}"
    ]
    print_rounds(table, run, steps_per_round=25)
    out = capsys.readouterr().out.splitlines()
    assert "'wiped': tensors pruned >= 99%)" in out[0]
    assert out[1:] == [*lines, *mask_warnings(table)]  # the warning right under the table


def test_a_round_mask_that_cannot_be_read_is_named_not_fatal(tmp_path):
    run = _imp_run(tmp_path, {1: masks(), 2: masks(pooler=0)})
    store = TicketStore(run / "masks")
    path = store.object_path(store.resolve(round_alias(2)))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    (store.refs_dir / round_alias(1)).unlink()
    table = write_rounds(run, tmp_path / "no-theta0")
    assert [line[-19:] for line in format_rounds(table).splitlines()[2:]] == [
        "           ?      ?",
        "           ?      ?",
    ]
    warnings = mask_warnings(table)
    assert len(warnings) == 2
    assert warnings[0].startswith(
        f"WARNING: round 1's mask was not checked: {store.root}: no ticket 'round_01'"
    )
    assert warnings[1].startswith(f"WARNING: round 2's mask was not checked: {path}: hash check failed")


def test_the_round_table_records_whether_theta0_passed_and_warns_when_it_failed(tmp_path, capsys):
    from lottery.imp.report import print_rounds
    from lottery.train.theta0 import Theta0Verdict, write_verdict

    run = _imp_run(tmp_path, {1: masks(query0=30, ffn0=30, query1=30, pooler=6)})
    theta0 = tmp_path / "theta0"
    theta0.mkdir()
    write_verdict(theta0, Theta0Verdict(False, ("itm_acc", "relation"), str(theta0)))
    table = write_rounds(run, theta0)
    assert json.loads((run / "rounds.json").read_text())["theta0_passed"] is False
    assert (table["theta0_dir"], table["theta0_failed"]) == (str(theta0), ["itm_acc", "relation"])
    print_rounds(table, run, 25)
    warning = [line for line in capsys.readouterr().out.splitlines() if "FAILED its criteria" in line]
    assert warning == [
        f"WARNING: these rounds start from theta0 {theta0}, which FAILED its criteria (itm_acc, relation): "
        "its tickets come from a model that did not learn them all"
    ]
    assert write_rounds(run, tmp_path / "elsewhere")["theta0_passed"] is None  # no verdict at hand
