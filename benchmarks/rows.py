"""The one output every figure script shares: rows of (figure, measured, target), printed and as JSON.

`run_all.py` runs each script as a subprocess with ``--json PATH`` and reads the rows back, so a script's
human-readable print and its machine-readable result can never disagree. A target is a short string
that `run_all.verdict` knows how to judge: ``"<= 1.01"``, ``"< 1"``, ``">= 3"``, ``"identical"``,
``"reported"`` (no target: a number to read, not to pass).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One measured figure; `measured` is a number (judged against `target`) or a word ("yes"/"no")."""

    figure: str  # what was measured, with its setting, e.g. "ticket bits / prunable weight (uniter-base)"
    measured: float | str
    target: str  # see the module docstring
    unit: str = ""  # printed after the number: "s", "x", "GiB"
    note: str = ""  # the baseline or the absolute figures behind a ratio

    def shown(self) -> str:
        """`measured` as the table prints it."""
        if isinstance(self.measured, str):
            return self.measured
        return f"{self.measured:.4g}{' ' + self.unit if self.unit else ''}"


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--quick`` (small settings, for a smoke run) and ``--json PATH``: the flags run_all passes."""
    parser.add_argument("--quick", action="store_true", help="small settings: a smoke run, noisier ratios")
    parser.add_argument("--json", type=Path, help="also write the rows to this file, for run_all.py")


def emit(rows: list[Row], json_path: Path | None) -> None:
    """Print `rows` one a line and, when `json_path` is given, write them there as a JSON list."""
    for row in rows:
        note = f"  ({row.note})" if row.note else ""
        print(f"{row.figure}: {row.shown()}  [target {row.target}]{note}", flush=True)
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(row) for row in rows], indent=1))


def read_rows(path: Path) -> list[Row]:
    """The rows a script wrote with `emit`."""
    return [Row(**fields) for fields in json.loads(path.read_text())]
