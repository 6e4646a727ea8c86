"""Run every benchmark of issue 24, each as its own subprocess, and print one table: figure | measured | target | verdict.

Each script measures its ratios against a baseline taken in the same run (machines are noisy; only
ratios carry over) and writes its rows as JSON (`rows.py`); this driver only judges them against their
targets and lays them out. A verdict is `pass` or `miss` for a row with a target, `reported` for a
number without one, and `error` for a script that failed (its last stderr lines are printed). One
subprocess per script, run one after the other: no two trainings share the 2 cores, and one script's
memory or crash cannot touch the next's figures.

Usage, from the repo root:
    python benchmarks/run_all.py [--quick] [--only ticket_bits threshold_memory ...] [--markdown out.md]
`--quick` passes `--quick` to every script: small settings for a smoke run (noisier ratios; figure 7
then runs uniter-base instead of uniter-large).
"""

from __future__ import annotations

import argparse
import operator
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rows import Row, read_rows

HERE = Path(__file__).resolve().parent
# in the order they run: the heaviest (figure 7) last, so a smoke run shows the rest first
SCRIPTS = (
    "ticket_bits",
    "ticket_broadcast",
    "threshold_memory",
    "threshold_world_size",
    "loader_throughput",
    "matmul_utilisation",
    "sparsity_overhead",
    "zero3_memory",
)
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}


def verdict(row: Row) -> str:
    """pass / miss against the row's target, `reported` when it has none, `error` for a failed script."""
    if row.target == "reported":
        return "reported"
    if row.target == "error":
        return "error"
    if row.target == "identical":
        return "pass" if row.measured == "yes" else "miss"
    op, _, bound = row.target.partition(" ")
    if op not in _COMPARISONS or not isinstance(row.measured, (int, float)):
        raise ValueError(
            f"{row.figure}: cannot judge measured {row.measured!r} against target {row.target!r}; a target is "
            "'reported', 'identical' or '<op> <number>' with op one of " + ", ".join(_COMPARISONS)
        )
    return "pass" if _COMPARISONS[op](float(row.measured), float(bound)) else "miss"


def table(rows: Sequence[Row]) -> str:
    """The rows as one Markdown table: figure | measured | target | verdict."""
    lines = ["| figure | measured | target | verdict |", "| --- | --- | --- | --- |"]
    for row in rows:
        target = "-" if row.target in ("reported", "error") else row.target
        lines.append(f"| {row.figure} | {row.shown()} | {target} | {verdict(row)} |")
    return "\n".join(lines)


def failed_row(script: str, returncode: int) -> Row:
    """The row standing for a script that did not finish."""
    return Row(figure=f"{script}.py", measured=f"failed (exit {returncode})", target="error")


def run_script(script: str, quick: bool) -> tuple[list[Row], float]:
    """(the script's rows, its wall seconds); a failure is one `failed_row` and its stderr tail printed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [
            sys.executable,
            str(HERE / f"{script}.py"),
            "--json",
            str(out),
            *(["--quick"] if quick else []),
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(proc.stdout, end="", flush=True)
        if proc.returncode != 0 or not out.is_file():
            print(
                f"{script}.py failed (exit {proc.returncode}):", *proc.stderr.splitlines()[-20:], sep="\n  "
            )
            return [failed_row(script, proc.returncode)], seconds
        return read_rows(out), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings in every script")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    parser.add_argument("--markdown", type=Path, help="also write the table (and wall times) here")
    args = parser.parse_args()
    rows: list[Row] = []
    walls: dict[str, float] = {}
    for script in args.only or SCRIPTS:
        print(f"== {script}.py{' --quick' if args.quick else ''}", flush=True)
        script_rows, walls[script] = run_script(script, args.quick)
        rows += script_rows
    text = table(rows)
    text += "\n\nwall time per script: " + ", ".join(f"{s}.py {t:.0f} s" for s, t in walls.items())
    print(f"\n{text}")
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")
    sys.exit(1 if any(verdict(row) == "error" for row in rows) else 0)


if __name__ == "__main__":
    main()
