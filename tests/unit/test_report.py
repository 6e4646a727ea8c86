"""`lottery report` on hand-made fine-tune results: rows, % of dense, the paper beside, figures written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lottery.cli import main
from lottery.report.collect import PRIMARY, collect, dense_scores
from lottery.report.paper import mean_percent
from lottery.report.render import markdown
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketMeta, TicketStore


def _write(
    root: Path,
    name: str,
    task: str,
    score: float,
    *,
    sparsity=0.0,
    method=None,
    tasks=(),
    init="theta0",
    chance: float | None = None,
    ticket_id: str = "x" * 64,
    store: str | None = None,
    theta0_failed: tuple[str, ...] | None = None,
    family: str | None = None,
) -> None:
    metric = PRIMARY[task]
    meta = (
        None if method is None else {"id": ticket_id, "method": method, "tasks": list(tasks), "imp_round": 6}
    )
    record = {
        "task": task,
        "metrics": {metric: score},
        "ticket": "dense" if method is None else "some/alias",
        "ticket_meta": meta,
        "sparsity": sparsity,
        "init": init,
        "adversarial": False,
    }
    if chance is not None:
        record["chance"] = {metric: chance}
    if family is not None:  # runs record it since model families exist
        record["family"] = family
    if store is not None:
        record["config"] = {"store": store}
    if theta0_failed is not None:  # runs record their theta0's verdict
        record.update(
            theta0_dir="/cache/theta0/abc", theta0_passed=not theta0_failed, theta0_failed=list(theta0_failed)
        )
    (root / name).mkdir(parents=True)
    (root / name / "metrics.json").write_text(json.dumps(record))


@pytest.fixture
def runs(tmp_path) -> Path:
    pretraining = ("itm", "mlm", "mrckl", "mrfr")
    _write(tmp_path, "a", "vqa", 0.60)
    _write(tmp_path, "b", "nlvr2", 0.80)
    _write(tmp_path, "c", "vqa", 0.57, sparsity=0.6, method="imp", tasks=pretraining)
    _write(tmp_path, "d", "nlvr2", 0.72, sparsity=0.6, method="imp", tasks=pretraining)
    _write(tmp_path, "e", "vqa", 0.30, sparsity=0.6, method="random", tasks=pretraining)
    _write(tmp_path, "f", "nlvr2", 0.55, sparsity=0.6, method="imp", tasks=pretraining, init="bert")
    _write(tmp_path, "g", "nlvr2", 0.70, sparsity=0.7, method="imp", tasks=["vqa"])
    return tmp_path


def test_results_are_grouped_by_how_the_ticket_was_made(runs):
    results = collect([runs])
    assert len(results) == 7 and dense_scores(results) == {"vqa": 0.60, "nlvr2": 0.80}
    sources = {r.path.rsplit("/", 1)[-1]: (r.source, r.variant) for r in results}
    assert sources["c"] == ("pretrain", "imp") and sources["f"] == ("pretrain", "imp on bert")
    assert sources["g"] == ("vqa", "imp") and sources["a"] == ("-", "dense")


def test_the_report_prints_percent_of_dense_beside_the_paper(runs, tmp_path, capsys):
    main(["report", str(runs), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| imp | 60% | 0.570 (95%) | 0.720 (90%) | 92.5% |" in text
    assert f"mean {mean_percent(0.6):.1f}%" in text and "60%: 92.5%" in text
    for name in ("results.csv", "vqa_sparsity.png", "nlvr2_sparsity.png", "transfer.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert "report written to" in capsys.readouterr().out


def test_a_malformed_metrics_file_is_named(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text('{"task": "vqa"}')
    with pytest.raises(ValueError, match="bad/metrics.json: not a fine-tune metrics.json"):
        collect([tmp_path])


def test_the_chance_row_comes_from_the_runs_when_they_measured_it(tmp_path):
    _write(tmp_path, "run", "gqa", 0.9, chance=0.77)
    results = collect([tmp_path])
    assert results[0].chance == 0.77
    assert "| chance | - | 0.770 |" in markdown(results)


def test_a_task_the_dense_model_did_not_learn_is_left_out_of_the_means(tmp_path):
    pretraining = ("itm", "mlm")
    _write(tmp_path, "a", "gqa", 0.46, chance=0.46)
    _write(tmp_path, "b", "gqa", 0.46, chance=0.46, sparsity=0.7, method="imp", tasks=pretraining)
    _write(tmp_path, "c", "nlvr2", 0.80, chance=0.50)
    _write(tmp_path, "d", "nlvr2", 0.60, chance=0.50, sparsity=0.7, method="imp", tasks=pretraining)
    text = markdown(collect([tmp_path]))
    assert "| gqa* | nlvr2 |" in text and "gqa: the dense model is not above chance" in text
    assert "| imp | 70% | 0.460 (100%) | 0.600 (75%) | 75.0% |" in text


def test_a_dense_score_of_zero_gives_no_percentages_and_no_crash(tmp_path):
    """A short run's VCR Q->AR can be exactly 0.0 dense: every % of it is undefined, not a crash."""
    _write(tmp_path, "a", "vcr", 0.0, chance=0.0625)
    _write(tmp_path, "b", "vcr", 0.03, chance=0.0625, sparsity=0.6, method="imp", tasks=("itm",))
    main(["report", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "| imp | 60% | 0.030 | - |" in (tmp_path / "out" / "report.md").read_text()


def _ticket(store: Path, pooler_pruned: int) -> str:
    """A ticket of a 10x10 encoder tensor (60 pruned) and a 4x5 pooler (`pooler_pruned` of 20 pruned)."""
    encoder, pooler = torch.ones(100, dtype=torch.bool), torch.ones(20, dtype=torch.bool)
    encoder[:60], pooler[:pooler_pruned] = False, False
    masks = MaskSet({"enc.layer.0.weight": encoder.view(10, 10), "pooler.weight": pooler.view(4, 5)}, ("w",))
    return TicketStore(store).put(masks, TicketMeta(family="uniter", model="tiny", method="imp"))


EXPLAIN = (
    "such a tensor passes on (nearly) its bias alone (a wiped-out pooler makes the pooled output, "
    "and every answer from it, a constant)"
)


def test_the_report_checks_each_ticket_per_tensor_and_says_which_it_could_not(tmp_path, capsys):
    store, runs = tmp_path / "store", tmp_path / "runs"
    wiped, healthy, gone = _ticket(store, 20), _ticket(store, 6), "ab" * 32
    tasks = ("itm", "mlm")
    _write(runs, "a", "vqa", 0.60)
    _write(runs, "b", "nlvr2", 0.80)
    for name, task in (("c", "vqa"), ("d", "nlvr2")):  # the wiped-out ticket, used twice
        _write(
            runs, name, task, 0.3, sparsity=0.67, method="imp", tasks=tasks, ticket_id=wiped, store=str(store)
        )
    _write(
        runs, "e", "vqa", 0.58, sparsity=0.55, method="imp", tasks=tasks, ticket_id=healthy, store=str(store)
    )
    _write(
        runs,
        "f",
        "vqa",
        0.5,
        sparsity=0.7,
        method="imp",
        tasks=tasks,
        ticket_id=gone,
        store=str(tmp_path / "gone"),
    )
    main(["report", str(runs), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.md").read_text()
    section = text[text.index("## Tickets: per-tensor sparsity") :].splitlines()
    assert section[4:] == [
        "| ticket | used as | method | sparsity | runs | max per-tensor sparsity | wiped out (>= 99%) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {wiped[:12]} | some/alias | imp | 66.67% | 2 | 100.00% (pooler.weight) | **!! pooler.weight 100.00%** |",
        f"| {healthy[:12]} | some/alias | imp | 55.00% | 1 | 60.00% (enc.layer.0.weight) | none |",
        f"| {gone[:12]} | some/alias | imp | 70.00% | 1 | not checked | ? |",
        "",
        f"- WARNING: ticket {wiped[:12]} wipes out 1 prunable tensor (>= 99% of its weights pruned): "
        f"pooler.weight 100.00%; {EXPLAIN}",
        f"- ticket {gone[:12]} was not checked per tensor: store {tmp_path / 'gone'} is gone (no such directory)",
    ]
    # `lottery report` prints it, warnings included (after DeepSpeed's accelerator line when it is the
    # first to import DeepSpeed in this process)
    assert text in capsys.readouterr().out
    csv_header = (tmp_path / "out" / "results.csv").read_text().splitlines()[0]
    assert csv_header.endswith(",chance,ticket_id,store,theta0_passed,theta0_failed,theta0_dir,seed,family")


def test_a_damaged_ticket_in_the_report_names_its_file_and_the_problem(tmp_path):
    store, runs = tmp_path / "store", tmp_path / "runs"
    ticket = _ticket(store, 20)
    path = TicketStore(store).object_path(ticket)
    path.write_bytes(path.read_bytes()[:-3])
    _write(runs, "a", "vqa", 0.60)
    _write(
        runs, "b", "vqa", 0.3, sparsity=0.67, method="imp", tasks=("itm",), ticket_id=ticket, store=str(store)
    )
    main(["report", str(runs), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"| {ticket[:12]} | some/alias | imp | 67.00% | 1 | not checked | ? |" in text
    note = next(
        line for line in text.splitlines() if line.startswith(f"- ticket {ticket[:12]} was not checked")
    )
    assert f"per tensor: {path}: hash check failed" in note and "truncated/unreadable safetensors" in note


def test_rows_from_a_theta0_that_failed_its_criteria_are_marked_and_kept_apart(tmp_path, capsys):
    """Defect 12: a run on a failed theta0 must not pass for a run on one that learned the world."""
    pretraining = ("itm", "mlm")
    failed = ("ITM accuracy", "grounded MLM: colour")
    _write(tmp_path, "a", "vqa", 0.60, theta0_failed=())
    _write(tmp_path, "b", "vqa", 0.50, sparsity=0.6, method="imp", tasks=pretraining, theta0_failed=())
    _write(tmp_path, "c", "vqa", 0.30, sparsity=0.6, method="imp", tasks=pretraining, theta0_failed=failed)
    _write(tmp_path, "d", "vqa", 0.40, sparsity=0.7, method="imp", tasks=pretraining)  # before verdicts
    results = collect([tmp_path])
    by_name = {Path(r.path).name: r for r in results}
    assert by_name["b"].theta0_passed is True and by_name["d"].theta0_passed is None
    assert by_name["c"].theta0_passed is False
    assert by_name["c"].theta0_failed == "ITM accuracy; grounded MLM: colour"
    main(["report", str(tmp_path), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| imp | 60% | 0.500 (83%) | 83.3% |" in text
    assert "| imp [theta0 failed] | 60% | 0.300 (50%) | 50.0% |" in text
    assert "| imp | 70% | 0.400 (67%) | 66.7% |" in text
    assert "- /cache/theta0/abc: failed ITM accuracy; grounded MLM: colour" in text
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert rows[0].endswith(",theta0_passed,theta0_failed,theta0_dir,seed,family")
    assert sum(",False,ITM accuracy; grounded MLM: colour," in row for row in rows) == 1


def test_runs_of_several_families_get_a_section_each_against_their_own_dense_model(tmp_path):
    pretraining = ("itm", "mlm")
    _write(tmp_path, "u-dense", "vqa", 0.60)  # recorded before families: UNITER's
    _write(tmp_path, "u-s70", "vqa", 0.54, sparsity=0.7, method="imp", tasks=pretraining)
    _write(tmp_path, "v-dense", "vqa", 0.40, family="vilt")
    _write(tmp_path, "v-s70", "vqa", 0.20, sparsity=0.7, method="imp", tasks=pretraining, family="vilt")
    results = collect([tmp_path])
    assert {r.family for r in results} == {"uniter", "vilt"}
    main(["report", str(tmp_path), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.md").read_text()
    uniter, vilt = text.split("## vilt")
    assert "## uniter" in uniter and "| imp | 70% | 0.540 (90%) | 90.0% |" in uniter
    assert "| imp | 70% | 0.200 (50%) | 50.0% |" in vilt  # against ViLT's dense 0.40, not UNITER's 0.60
    assert (tmp_path / "out" / "vilt" / "vqa_sparsity.png").stat().st_size > 0
    assert (tmp_path / "out" / "uniter" / "vqa_sparsity.png").stat().st_size > 0
