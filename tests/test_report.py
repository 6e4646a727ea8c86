"""`lottery report` on hand-made fine-tune results: rows, % of dense, the paper beside, figures written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lottery.cli import main
from lottery.report.collect import PRIMARY, collect, dense_scores
from lottery.report.paper import mean_percent
from lottery.report.render import markdown


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
) -> None:
    metric = PRIMARY[task]
    meta = (
        None if method is None else {"id": "x" * 64, "method": method, "tasks": list(tasks), "imp_round": 6}
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
