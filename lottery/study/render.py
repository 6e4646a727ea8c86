"""Rendering the study's tables: study.md (ours beside the paper's), one CSV and one PNG per table.

Split from `lottery.study.tables`, which computes them: the numbers can be tested without matplotlib,
and the look of a figure changed without touching a number.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lottery.files import open_atomic, write_text_atomic
from lottery.report.collect import Result
from lottery.report.render import CHANCE_MARGIN
from lottery.study.tables import (
    LABELS,
    VARIANTS,
    Baseline,
    Cell,
    Table1,
    Table2,
    Transfer,
    counted,
    mean_of,
    table1,
    table2,
    transfer,
    verdicts,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


_FIELDS = ("table", "row", "task", "sparsity", "mean", "std", "seeds", "paper")


def _line(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _text(cell: Cell | None) -> str:
    return "-" if cell is None else cell.text()


def _head(first: str, tasks: Sequence[str], bases: Mapping[str, Baseline], last: Sequence[str]) -> list[str]:
    cols = [first, *(f"{t}*" if bases[t].why_not else t for t in tasks), *last]
    return [_line(cols), "|" + " --- |" * len(cols)]


def _left_out(tasks: Sequence[str], bases: Mapping[str, Baseline]) -> list[str]:
    out = [f"{t} ({bases[t].why_not})" for t in tasks if bases[t].why_not]
    return ["", f"\\* left out of the means and the verdicts' counts: {', '.join(out)}."] if out else []


def _dense_md(bases: Mapping[str, Baseline]) -> list[str]:
    lines = [
        "## Dense and chance",
        "",
        "The 100% of every cell. A ticket of a model that learned nothing proves nothing: a task counts "
        f"only if its dense score is at least chance + {CHANCE_MARGIN}.",
        "",
        "| task | dense (mean ± std over seeds) | seeds | chance | counted |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t, b in bases.items():
        dense = _num(b.dense, ".3f") + (f" ± {b.std:.3f}" if b.seeds > 1 else "")
        mark = f"({b.why_not})" if b.why_not else "yes"
        lines.append(_line([t, dense, str(b.seeds), _num(b.chance, ".3f"), mark]))
    return lines


def _table1_md(t1: Table1) -> list[str]:
    used, tasks = counted(t1.tasks, t1.bases), t1.tasks
    lines = [
        "## Table 1: each task's own ticket and its baselines",
        "",
        "% of dense, mean ± std over seeds, at each task's chosen sparsity (its IMP ticket keeps 99% of "
        "dense); each paper row is the paper's (UNITER-base) at the paper's sparsity. theta0': the mask on "
        "BERT's weights; theta0'': on shuffled weights. mean: over the counted tasks.",
        "",
        *_head("ticket", tasks, t1.bases, ["mean"]),
        _line(["sparsity", *(_num(t1.sparsity.get(t), ".0%") for t in tasks), ""]),
        _line(["sparsity (paper)", *(_num(t1.paper_sparsity.get(t), ".0%") for t in tasks), ""]),
    ]
    for v in VARIANTS:
        ours, theirs = t1.cells[v], t1.paper[v]
        known = [theirs[t] for t in used if t in theirs]
        lines.append(_line([LABELS[v], *(_text(ours[t]) for t in tasks), _num(mean_of(ours, used))]))
        their_mean = _num(statistics.fmean(known) if known else None)
        lines.append(_line([f"{LABELS[v]} (paper)", *(_num(theirs.get(t)) for t in tasks), their_mean]))
    return lines + _left_out(tasks, t1.bases)


def _table2_md(t2: Table2) -> list[str]:
    lines = [
        "## Table 2: the universal ticket (IMP on the pre-training tasks)",
        "",
        "% of dense, mean ± std over seeds. mean: ours over the counted tasks, the paper's over its 8 "
        "columns (IR and TR apart; our retrieval is compared with their mean).",
        "",
        *_head("sparsity", t2.tasks, t2.bases, ["mean"]),
    ]
    for s in t2.sparsities:
        lines.append(_line([f"{s:.0%}", *(_text(t2.cells[s][t]) for t in t2.tasks), _num(t2.mean[s])]))
        theirs = t2.paper[s]
        lines.append(
            _line([f"{s:.0%} (paper)", *(_num(theirs.get(t)) for t in t2.tasks), _num(t2.paper_mean[s])])
        )
    return lines + _left_out(t2.tasks, t2.bases)


def _transfer_md(tr: Transfer) -> list[str]:
    lines = [
        f"## Transfer: tickets found on one task, fine-tuned on another ({tr.sparsity:.0%} sparse)",
        "",
        "% of the target's dense, mean ± std over seeds; the best source per target in bold. The paper "
        "(its transfer figure): at high sparsity a task's own ticket does best on it, and the pre-training "
        "ticket is the best source for retrieval and VCR.",
        "",
        *_head("source \\ target", tr.tasks, tr.bases, []),
    ]
    best = {t: max((c.mean for s in tr.sources if (c := tr.cells[s][t])), default=None) for t in tr.tasks}
    for s in tr.sources:
        row = [
            (f"**{c.text()}**" if c.mean == best[t] else c.text()) if (c := tr.cells[s][t]) else "-"
            for t in tr.tasks
        ]
        lines.append(_line([s, *row]))
    return lines + _left_out(tr.tasks, tr.bases)


def markdown(t1: Table1, t2: Table2, tr: Transfer, notes: Sequence[str] = ()) -> str:
    """study.md: the notes as given, the dense scores, the three tables beside the paper's, the verdicts."""
    lines = ["# Playing lottery tickets with vision and language: the study", ""]
    lines += [*notes, ""] if notes else []
    for part in (_dense_md(t1.bases), _table1_md(t1), _table2_md(t2), _transfer_md(tr)):
        lines += [*part, ""]
    lines += ["## Verdicts", "", *(f"- {v}" for v in verdicts(t1, t2, tr))]
    return "\n".join(lines) + "\n"


def _record(
    table: str, row: str, task: str, sparsity: float | None, cell: Cell | None, theirs: float | None
) -> dict[str, object]:
    ours = (cell.mean, cell.std, cell.seeds) if cell else (None, None, None)
    values = (table, row, task, sparsity, *ours, theirs)
    return {k: "" if v is None else v for k, v in zip(_FIELDS, values, strict=True)}


def csv_rows(t1: Table1, t2: Table2, tr: Transfer) -> dict[str, list[dict[str, object]]]:
    """File name -> one row per cell (missing cells with empty numbers, so the paper's still shows)."""
    one = [
        _record("table1", LABELS[v], t, t1.sparsity.get(t), t1.cells[v][t], t1.paper[v].get(t))
        for v in VARIANTS
        for t in t1.tasks
    ]
    two = []
    for s in t2.sparsities:
        two += [_record("table2", "universal", t, s, t2.cells[s][t], t2.paper[s].get(t)) for t in t2.tasks]
        mean = _record("table2", "universal", "mean", s, None, t2.paper_mean[s])  # over the counted tasks
        two.append({**mean, "mean": "" if t2.mean[s] is None else t2.mean[s]})
    three = [
        _record("transfer", a, b, tr.sparsity, tr.cells[a][b], None) for a in tr.sources for b in tr.tasks
    ]
    return {"table1.csv": one, "table2.csv": two, "transfer.csv": three}


def _save(fig: Figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with open_atomic(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def _pyplot():  # the pyplot module, imported only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def plot_table1(t1: Table1, path: Path) -> None:
    """Grouped bars per task (ours, with the std over seeds), the paper's value as a black tick on each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.5 * len(t1.tasks) + 2.5, 4))
    width = 0.8 / len(VARIANTS)
    for i, v in enumerate(VARIANTS):
        xs = [j + (i - (len(VARIANTS) - 1) / 2) * width for j in range(len(t1.tasks))]
        cells = [t1.cells[v][t] for t in t1.tasks]
        ax.bar(
            xs,
            [c.mean if c else 0 for c in cells],
            width,
            yerr=[c.std if c else 0 for c in cells],
            label=LABELS[v],
            capsize=2,
        )
        theirs = [t1.paper[v].get(t, float("nan")) for t in t1.tasks]
        ax.scatter(xs, theirs, marker="_", s=120, color="black", label="paper" if i == 0 else None, zorder=3)
    ax.axhline(100, linestyle=":", color="gray")
    ax.set_xticks(
        range(len(t1.tasks)), [f"{t}*" if t1.bases[t].why_not else t for t in t1.tasks], rotation=20
    )
    ax.set(ylabel="% of dense", title="Table 1: own IMP ticket vs baselines at the chosen sparsity")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_table2(t2: Table2, path: Path) -> None:
    """% of dense vs sparsity: one solid line per task (ours), the paper's mean over its tasks dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in t2.tasks:
        points = [(100 * s, c.mean) for s in t2.sparsities if (c := t2.cells[s][t]) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=f"{t}*" if t2.bases[t].why_not else t)
    theirs = [(100 * s, m) for s in t2.sparsities if (m := t2.paper_mean[s]) is not None]
    if theirs:
        ax.plot(*zip(*theirs, strict=True), linestyle="--", color="black", label="paper (mean)")
    ax.set(xlabel="sparsity (%)", ylabel="% of dense", title="Table 2: the universal ticket")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_transfer(tr: Transfer, path: Path) -> None:
    """Heat map source x target in % of the target's dense, each cell annotated with its mean."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(tr.tasks) + 2.5, 0.6 * len(tr.sources) + 2))
    grid = [[c.mean if (c := tr.cells[s][t]) else float("nan") for t in tr.tasks] for s in tr.sources]
    if any(v == v for row in grid for v in row):
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        fig.colorbar(image, label="% of dense")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if value == value:  # dark text on the light (high) end of viridis
                    color = "black" if image.norm(value) > 0.6 else "white"
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", color=color, fontsize=8)
        ax.set_xticks(
            range(len(tr.tasks)), [f"{t}*" if tr.bases[t].why_not else t for t in tr.tasks], rotation=20
        )
        ax.set_yticks(range(len(tr.sources)), tr.sources)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="target task", ylabel="ticket source", title=f"Transfer at {tr.sparsity:.0%}: % of dense")
    _save(fig, path)


def write_tables(
    results: list[Result],
    chosen: dict[str, float],
    sparsities: Sequence[float],
    transfer_sparsity: float,
    sources: Sequence[str],
    out_dir: Path,
    notes: Sequence[str] = (),
) -> Path:
    """study.md, table1/table2/transfer .csv and .png in `out_dir`, each written atomically; study.md
    last, so that its presence says the set is complete. Returns study.md's path."""
    t1, t2 = table1(results, chosen), table2(results, sparsities)
    tr = transfer(results, transfer_sparsity, sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in csv_rows(t1, t2, tr).items():
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(out_dir / name, buffer.getvalue())
    plot_table1(t1, out_dir / "table1.png")
    plot_table2(t2, out_dir / "table2.png")
    plot_transfer(tr, out_dir / "transfer.png")
    return write_text_atomic(out_dir / "study.md", markdown(t1, t2, tr, notes))
