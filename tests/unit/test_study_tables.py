"""The study's tables on hand-made result rows: % of dense over seeds, chance, verdicts, the files."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from lottery.report import paper
from lottery.report.collect import Result
from lottery.study.render import write_tables
from lottery.study.tables import Cell, table1, table2, transfer, verdicts


def row(
    task: str,
    score: float,
    *,
    method: str = "imp",
    source: str = "pretrain",
    sparsity: float = 0.0,
    init: str = "theta0",
    seed: int = 0,
    adversarial: bool = False,
    chance: float | None = 0.1,
) -> Result:
    return Result(
        task=task,
        score=score,
        ticket="-" if method == "dense" else f"{source}-{method}-{sparsity}",
        source=source,
        method=method,
        sparsity=sparsity,
        init=init,
        adversarial=adversarial,
        path=f"/runs/{task}/{method}/{seed}",
        chance=chance,
        seed=seed,
    )


def dense(task: str, score: float, seed: int = 0, chance: float | None = 0.1) -> Result:
    return row(task, score, method="dense", source="-", seed=seed, chance=chance)


def test_cell_text() -> None:
    assert Cell(97.34, 1.16, 3).text() == "97.3 ± 1.2"
    assert Cell(97.34, 0.0, 1).text() == "97.3"


def test_percent_of_dense_and_std_over_seeds() -> None:
    results = [
        dense("vqa", 0.60, seed=0),
        dense("vqa", 0.40, seed=1),  # dense mean 0.5
        row("vqa", 0.45, sparsity=0.6, seed=0),
        row("vqa", 0.50, sparsity=0.6, seed=1),
        row("vqa", 0.55, sparsity=0.6, seed=2),
        row("vqa", 0.10, sparsity=0.6, seed=3, adversarial=True),  # never counted
        row("vqa", 0.20, sparsity=0.7, seed=0),
    ]
    t2 = table2(results, [0.6, 0.7])
    cell = t2.cells[0.6]["vqa"]
    percents = [90.0, 100.0, 110.0]
    assert cell is not None and cell.seeds == 3
    assert cell.mean == pytest.approx(100.0)
    assert cell.std == pytest.approx(statistics.pstdev(percents))
    assert t2.cells[0.7]["vqa"] == Cell(pytest.approx(40.0), 0.0, 1)
    assert t2.mean[0.6] == pytest.approx(100.0)
    assert t2.bases["vqa"].dense == pytest.approx(0.5)
    assert t2.bases["vqa"].std == pytest.approx(0.1)
    # the paper's per-task figure, and retrieval as the mean of its IR and TR
    assert t2.paper[0.6]["vqa"] == pytest.approx(100 * 70.41 / 70.64)
    assert t2.paper[0.6]["retrieval"] == pytest.approx(50 * (70.18 / 71.25 + 82.40 / 84.63))
    assert t2.paper_mean[0.6] == pytest.approx(paper.mean_percent(0.6))


def test_task_without_dense_row_gives_dashes(tmp_path: Path) -> None:
    results = [dense("vqa", 0.5), row("vqa", 0.5, sparsity=0.6), row("gqa", 0.4, sparsity=0.6)]
    t2 = table2(results, [0.6])
    assert t2.cells[0.6]["gqa"] is None
    assert t2.counted[0.6] == ("vqa",)
    assert t2.bases["gqa"].why_not == "no dense row"
    text = write_tables(results, {"gqa": 0.6}, [0.6], 0.6, ["pretrain", "gqa"], tmp_path).read_text()
    gqa_row = next(line for line in text.splitlines() if line.startswith("| gqa |"))
    assert gqa_row.split(" | ")[1] == "-"  # its dense score
    assert "gqa (no dense row)" in text
    t1 = table1(results, {"gqa": 0.6})
    assert all(t1.cells[v]["gqa"] is None for v in ("imp", "random", "bert", "shuffled"))


def test_chance_level_task_left_out_of_averages() -> None:
    results = [
        dense("vqa", 0.5),
        row("vqa", 0.45, sparsity=0.6),  # 90%
        dense("vcr", 0.28, chance=0.25),  # below chance + 0.05: learned nothing
        row("vcr", 0.28, sparsity=0.6, chance=0.25),  # "100%", of nothing
    ]
    t2 = table2(results, [0.6])
    assert t2.cells[0.6]["vcr"] == Cell(pytest.approx(100.0), 0.0, 1)  # shown...
    assert t2.counted[0.6] == ("vqa",)  # ...not counted
    assert t2.mean[0.6] == pytest.approx(90.0)
    assert t2.bases["vcr"].why_not == "dense at chance: not counted"
    lines = verdicts(table1(results, {}), t2, transfer(results, 0.6, ["pretrain"]))
    assert lines[0].startswith("universal 60%: keeps 90.0% of dense over 1 tasks")
    assert lines[-1] == "left out of every average and count above: vcr (dense at chance: not counted)"


def _table1_results(imp: float, random: float, bert: dict[str, float]) -> list[Result]:
    results = []
    for task in ("vqa", "gqa", "nlvr2"):
        results += [
            dense(task, 0.5),
            row(task, imp, source=task, sparsity=0.7),
            row(task, random, method="random", source="-", sparsity=0.7),
            row(task, bert[task], source=task, sparsity=0.7, init="bert"),
            row(task, 0.1, source=task, sparsity=0.7, init="shuffled"),
            row(task, 0.05, source=task, sparsity=0.5),  # another round: not the chosen one
        ]
    return results


def _table1_lines(results: list[Result]) -> list[str]:
    chosen = {"vqa": 0.7, "gqa": 0.7, "nlvr2": 0.7}
    return verdicts(table1(results, chosen), table2(results, []), transfer(results, 0.7, []))


def test_table1_verdicts_meet_targets() -> None:
    results = _table1_results(0.49, 0.40, {"vqa": 0.4, "gqa": 0.4, "nlvr2": 0.4})
    t1 = table1(results, {"vqa": 0.7, "gqa": 0.7, "nlvr2": 0.7})
    assert t1.cells["imp"]["vqa"] == Cell(pytest.approx(98.0), 0.0, 1)
    assert t1.cells["random"]["vqa"] == Cell(pytest.approx(80.0), 0.0, 1)
    assert t1.paper_sparsity["retrieval"] == pytest.approx(0.6)
    assert t1.paper["imp"]["vqa"] == pytest.approx(100 * 69.98 / 70.64)
    lines = _table1_lines(results)
    gap = statistics.fmean(t1.paper["imp"][t] - t1.paper["random"][t] for t in ("vqa", "gqa", "nlvr2"))
    assert lines[1] == (
        "IMP vs random at the chosen sparsity: IMP ahead by 18.0 points of % of dense on average over "
        f"3 tasks (paper {gap:.1f}; target >= 10): meets target"
    )
    assert (
        lines[2] == "IMP vs theta0': ahead on 3 of 3 tasks (paper: 3 of 3; target: >= 5 of 7): meets target"
    )
    assert lines[3].startswith("IMP vs theta0'': ahead on 3 of 3 tasks") and lines[3].endswith("meets target")
    assert lines[0] == "universal ticket (Table 2): not measured at 60% or 70%"


def test_table1_verdicts_miss_targets() -> None:
    results = _table1_results(0.45, 0.42, {"vqa": 0.46, "gqa": 0.44, "nlvr2": 0.47})
    lines = _table1_lines(results)
    assert "IMP ahead by 6.0 points" in lines[1] and lines[1].endswith("below target")
    assert lines[2].startswith("IMP vs theta0': ahead on 1 of 3 tasks") and lines[2].endswith("below target")


def test_table2_verdicts() -> None:
    results = [dense("vqa", 0.5), dense("gqa", 0.5)]
    results += [row("vqa", 0.49, sparsity=0.6), row("gqa", 0.485, sparsity=0.6)]  # 98, 97 -> 97.5
    results += [row("vqa", 0.45, sparsity=0.7), row("gqa", 0.46, sparsity=0.7)]  # 90, 92 -> 91
    lines = verdicts(table1(results, {}), table2(results, [0.5, 0.6, 0.7, 0.8]), transfer(results, 0.7, []))
    assert lines[:2] == [
        "universal 60%: keeps 97.5% of dense over 2 tasks (paper 98%; target >= 97%): meets target",
        "universal 70%: keeps 91.0% of dense over 2 tasks (paper 96%; target >= 93%): below target",
    ]
    assert not any(line.startswith(("universal 50%", "universal 80%")) for line in lines)
    # no data at all: each finding says so
    empty = verdicts(table1([], {}), table2([], [0.6, 0.7]), transfer([], 0.7, ["pretrain"]))
    assert [line.split(": ", 1)[1] for line in empty] == [
        "not measured at 60% or 70%",
        *["not measured (no counted task has both)"] * 3,
        "not measured (no counted task has its own ticket and another)",
        "not measured / not measured (paper: yes)",
    ]


def test_transfer_picks_rows_and_judges_sources() -> None:
    results = [dense("vcr", 0.5), dense("retrieval", 0.8), dense("vqa", 0.5)]
    results += [
        row("vcr", 0.45, source="pretrain", sparsity=0.7),  # 90
        row("vcr", 0.40, source="vcr", sparsity=0.7),  # 80
        row("vcr", 0.49, source="vcr", sparsity=0.6),  # another sparsity: ignored
        row("vcr", 0.49, source="vcr", sparsity=0.7, adversarial=True),  # ignored
        row("vcr", 0.49, source="vcr", sparsity=0.7, init="bert"),  # ignored
        row("retrieval", 0.60, source="pretrain", sparsity=0.7),  # 75
        row("retrieval", 0.72, source="vqa", sparsity=0.704),  # 90: 0.704 rounds to 0.70
        row("vqa", 0.48, source="vqa", sparsity=0.7),  # 96
        row("vqa", 0.40, source="pretrain", sparsity=0.7),  # 80
    ]
    tr = transfer(results, 0.7, ["pretrain", "vqa", "vcr"])
    assert tr.cells["vcr"]["vcr"] == Cell(pytest.approx(80.0), 0.0, 1)
    assert tr.cells["pretrain"]["vcr"] == Cell(pytest.approx(90.0), 0.0, 1)
    assert tr.cells["vqa"]["retrieval"] == Cell(pytest.approx(90.0), 0.0, 1)
    assert tr.cells["vqa"]["vcr"] is None
    lines = verdicts(table1(results, {}), table2(results, []), tr)
    assert lines[4] == (
        "own-task ticket best on its own task at 70%: 1 of 2 tasks "
        "(paper: own-task best at high sparsity): does not match the paper"
    )
    assert lines[5] == "pre-training ticket best source for retrieval / vcr: no / yes (paper: yes)"


def test_write_tables_files(tmp_path: Path) -> None:
    results = []
    for seed, (d, u60, u70) in enumerate([(0.50, 0.49, 0.47), (0.52, 0.50, 0.48)]):
        for task in ("vqa", "retrieval"):
            results += [dense(task, d, seed), row(task, u60, sparsity=0.6, seed=seed)]
            results += [
                row(task, u70, sparsity=0.7, seed=seed),
                row(task, u70, source=task, sparsity=0.7, seed=seed),
            ]
            results += [row(task, 0.3, method="random", source="-", sparsity=0.7, seed=seed)]
    out = tmp_path / "study"
    path = write_tables(
        results,
        {"vqa": 0.7, "retrieval": 0.7},
        [0.6, 0.7],
        0.7,
        ["pretrain", "vqa", "retrieval"],
        out,
        notes=["Made by a test.", "second note"],
    )
    assert path == out / "study.md"
    names = {
        "study.md",
        "table1.csv",
        "table2.csv",
        "transfer.csv",
        "table1.png",
        "table2.png",
        "transfer.png",
    }
    assert {p.name for p in out.iterdir()} == names
    assert all((out / n).stat().st_size > 0 for n in names)
    assert (out / "table1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = path.read_text()
    assert "Made by a test.\nsecond note\n" in text
    assert "## Verdicts" in text and "## Table 1" in text and "## Table 2" in text and "## Transfer" in text
    percent = 100 * statistics.fmean([0.49, 0.50]) / 0.51
    ours_60 = next(line for line in text.splitlines() if line.startswith("| 60% |"))
    paper_60 = next(line for line in text.splitlines() if line.startswith("| 60% (paper) |"))
    assert ours_60.endswith(f" | {percent:.1f} |")
    assert paper_60.endswith(f" | {paper.mean_percent(0.6):.1f} |") and "98.1" in paper_60
    assert f"universal 60%: keeps {percent:.1f}% of dense over 2 tasks (paper 98%" in text

    with (out / "table2.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["table", "row", "task", "sparsity", "mean", "std", "seeds", "paper"]
    vqa_60 = next(r for r in rows if r["task"] == "vqa" and float(r["sparsity"]) == 0.6)
    assert float(vqa_60["mean"]) == pytest.approx(percent)
    assert float(vqa_60["std"]) == pytest.approx(statistics.pstdev([100 * 0.49 / 0.51, 100 * 0.50 / 0.51]))
    assert int(vqa_60["seeds"]) == 2
    assert float(vqa_60["paper"]) == pytest.approx(100 * 70.41 / 70.64)
    with (out / "table1.csv").open(newline="") as handle:
        t1_rows = list(csv.DictReader(handle))
    assert len(t1_rows) == 4 * 2  # four variants x two tasks
    bert = next(r for r in t1_rows if r["row"] == "theta0'" and r["task"] == "vqa")
    assert bert["mean"] == "" and float(bert["paper"]) == pytest.approx(100 * 67.98 / 70.64)
    with (out / "transfer.csv").open(newline="") as handle:
        cells = {(r["row"], r["task"]): r["mean"] for r in csv.DictReader(handle)}
    assert len(cells) == 3 * 2 and cells["vqa", "retrieval"] == ""
    assert float(cells["retrieval", "retrieval"]) == pytest.approx(100 * 0.475 / 0.51)
