"""Writing the report: results.csv, report.md (tables beside the paper's) and PNG figures (matplotlib)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from lottery.data.examples import TASK_NAMES
from lottery.files import open_atomic, write_text_atomic
from lottery.report.collect import Result, by_family, dense_scores
from lottery.report.paper import mean_percent, universal_percent_of_dense
from lottery.report.tickets import check_tickets
from lottery.report.tickets import markdown as tickets_markdown

# chance where it does not depend on the data: 3-way, true/false, and both of VCR's 4-way choices
CHANCE = {"snli-ve": 1 / 3, "nlvr2": 0.5, "vcr": 1 / 16}
# how far above chance a dense score must be for the task to count in "% of dense" means
CHANCE_MARGIN = 0.05
# the mark of a row whose runs started from a theta0 that failed its criteria (kept apart from the others)
THETA0_FAILED = " [theta0 failed]"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def chance_scores(results: list[Result]) -> dict[str, float]:
    """Each task's chance: as the runs measured it on their val sets, else where it is data-independent."""
    measured: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.chance is not None:
            measured[r.task].append(r.chance)
    return {**CHANCE, **{task: _mean(values) for task, values in measured.items()}}


def table(results: list[Result]) -> tuple[list[str], dict[tuple[str, float], dict[str, float]]]:
    """Tasks present, and (variant, sparsity) -> task -> mean score."""
    cells: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        label = r.variant if r.source in ("-", "pretrain") else f"{r.variant} ({r.source} ticket)"
        label += THETA0_FAILED if r.theta0_passed is False else ""
        cells[label, round(r.sparsity, 4)][r.task].append(r.score)
    tasks = [t for t in TASK_NAMES if any(r.task == t for r in results)]
    return tasks, {key: {t: _mean(v) for t, v in row.items()} for key, row in sorted(cells.items())}


def theta0_notes(results: list[Result]) -> list[str]:
    """One line per failed theta0 the runs started from: where it is, which criteria it failed."""
    failed = {r.theta0_dir: r.theta0_failed for r in results if r.theta0_passed is False}
    if not failed:
        return []
    lines = [
        f"`{THETA0_FAILED.strip()}`: the row's fine-tunes started from a theta0 that failed its criteria, "
        "so its scores say less about the tickets than a theta0 that learned the world would:"
    ]
    for directory, criteria in sorted(failed.items()):
        lines.append(f"- {directory or '(theta0 not recorded)'}: failed {criteria or '(not recorded)'}")
    return lines


def informative_tasks(results: list[Result], margin: float = CHANCE_MARGIN) -> list[str]:
    """Tasks whose dense score clears chance by `margin`: only there does "% of dense" say anything
    about a ticket (a task the dense model cannot learn keeps "100%" under any mask)."""
    dense, chance = dense_scores(results), chance_scores(results)
    return [t for t in dense if dense[t] > 0 and (t not in chance or dense[t] > chance[t] + margin)]


def markdown(results: list[Result]) -> str:
    tasks, rows = table(results)
    dense, chance = dense_scores(results), chance_scores(results)
    counted = informative_tasks(results)
    names = [t if t in counted or t not in dense else f"{t}*" for t in tasks]
    lines = [
        "| variant | sparsity | " + " | ".join(names) + " | mean % of dense |",
        "|" + " --- |" * (len(tasks) + 3),
    ]
    lines.append(
        "| chance | - | " + " | ".join(f"{chance[t]:.3f}" if t in chance else "-" for t in tasks) + " | - |"
    )
    for (variant, sparsity), row in rows.items():
        percents = [100 * row[t] / dense[t] for t in tasks if t in row and t in counted and dense.get(t)]
        cells = []
        for t in tasks:
            if t not in row:
                cells.append("-")
            elif dense.get(t):
                cells.append(f"{row[t]:.3f} ({100 * row[t] / dense[t]:.0f}%)")
            else:
                cells.append(f"{row[t]:.3f}")
        mean = f"{_mean(percents):.1f}%" if percents else "-"
        lines.append(f"| {variant} | {sparsity:.0%} | " + " | ".join(cells) + f" | {mean} |")
    notes = theta0_notes(results)
    if notes:
        lines += ["", *notes]
    left_out = [t for t in tasks if t in dense and t not in counted]
    if left_out:
        lines += [
            "",
            f"\\* {', '.join(left_out)}: the dense model is not above chance + {CHANCE_MARGIN} on val, so "
            "a ticket's % of dense says nothing there; left out of the means.",
        ]
    lines += ["", "The paper (UNITER-base, Table 2): the universal ticket keeps, in % of dense:", ""]
    for sparsity in (0.6, 0.7):
        paper = universal_percent_of_dense(sparsity)
        detail = ", ".join(f"{t} {v:.1f}" for t, v in paper.items())
        lines.append(f"- {sparsity:.0%}: mean {mean_percent(sparsity):.1f}% ({detail})")
    universal = [r for r in results if r.source == "pretrain" and r.variant == "imp" and r.task in counted]
    ours = [
        (s, [100 * r.score / dense[r.task] for r in universal if abs(r.sparsity - s) < 0.01])
        for s in (0.6, 0.7)
    ]
    lines += [
        "",
        "Ours (universal tickets, mean % of dense over the tasks the dense model learned): "
        + ", ".join(f"{s:.0%}: {_mean(v):.1f}%" if v else f"{s:.0%}: -" for s, v in ours),
    ]
    return "\n".join(lines) + "\n"


def write_csv(results: list[Result], path: Path) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(results[0])))
    writer.writeheader()
    for r in results:
        writer.writerow(asdict(r))
    write_text_atomic(path, buffer.getvalue())


def plot_sparsity(results: list[Result], out_dir: Path) -> list[Path]:
    """One PNG per task: score vs sparsity, one line per variant, dense as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    dense, chance = dense_scores(results), chance_scores(results)
    tasks, rows = table(results)
    for task in tasks:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for (variant, sparsity), row in rows.items():
            if task in row and variant.removesuffix(THETA0_FAILED) != "dense":
                lines[variant].append((sparsity, row[task]))
        for variant, points in sorted(lines.items()):
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot([100 * x for x in xs], ys, marker="o", label=variant)
        if task in dense:
            ax.axhline(dense[task], linestyle="--", color="black", label="dense")
        if task in chance:
            ax.axhline(chance[task], linestyle=":", color="gray", label="chance")
        ax.set(xlabel="sparsity (%)", ylabel=task, title=f"{task}: score vs sparsity")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{task.replace('+', 'plus')}_sparsity.png"
        with open_atomic(path) as handle:
            fig.savefig(handle, format="png", dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def plot_transfer(results: list[Result], out_dir: Path) -> Path | None:
    """Heat map: ticket source (and sparsity) x target task, in % of the target's dense score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = dense_scores(results)
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        # a dense score of 0 (a task not learned at all) has no percentages
        if r.source != "-" and dense.get(r.task) and r.init == "theta0" and not r.adversarial:
            cells[f"{r.source} @{r.sparsity:.0%}", r.task].append(100 * r.score / dense[r.task])
    if not cells:
        return None
    sources = sorted({s for s, _ in cells})
    tasks = [t for t in TASK_NAMES if any(t == task for _, task in cells)]
    grid = [[_mean(cells[s, t]) if (s, t) in cells else float("nan") for t in tasks] for s in sources]
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 0.6 * len(sources) + 1.5))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30)
    ax.set_yticks(range(len(sources)), sources)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value == value:
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, label="% of dense")
    ax.set_title("tickets transferred: % of the dense score")
    fig.tight_layout()
    path = out_dir / "transfer.png"
    with open_atomic(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return path


def write_report(results: list[Result], out_dir: Path) -> Path:
    """results.csv, report.md (the tables, then the tickets' per-tensor check) and the figures.

    Runs of several model families get a section and a figure directory each, every ticket measured
    against its own family's dense model.

    The tickets' section ends with a warning per ticket that wipes out a tensor or could not be
    checked: the scores alone would show such a ticket as one that lost the tasks. `lottery report`
    and the pipeline print report.md, so the warnings reach the terminal too.
    """
    if not results:
        raise ValueError("no fine-tune results (metrics.json) found under the given run directories")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(results, out_dir / "results.csv")
    checks = check_tickets(results)
    families = by_family(results)
    if len(families) == 1:
        (family,) = families
        text = f"Model family: {family}\n\n" + markdown(results)
        plot_sparsity(results, out_dir)
        plot_transfer(results, out_dir)
    else:  # each family against its own dense model; its figures in a directory of its own
        sections = []
        for family, runs in families.items():
            sections.append(f"## {family}\n\n" + markdown(runs))
            (out_dir / family).mkdir(exist_ok=True)
            plot_sparsity(runs, out_dir / family)
            plot_transfer(runs, out_dir / family)
        text = "\n".join(sections)
    if checks:
        text += "\n" + tickets_markdown(checks)
    write_text_atomic(out_dir / "report.md", text)
    return out_dir / "report.md"
