"""benchmarks/run_all.py judges and tabulates the figures' rows, and figure 1 computes a real ticket's size.

No training and no model: the verdict rules, the table, a script's failure turning into an `error`
row, and figure 1's bits per weight on a 2-layer x 16-hidden scope, where the header must dominate.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import run_all  # noqa: E402
import ticket_bits  # noqa: E402
from rows import Row, emit, read_rows  # noqa: E402
from scope_masks import random_masks, tiny_shapes  # noqa: E402

from lottery.sparsity.scope import DEFAULT_SCOPE, prunable_names  # noqa: E402


@pytest.mark.parametrize(
    ("measured", "target", "expected"),
    [
        (1.001, "<= 1.01", "pass"),
        (1.01, "<= 1.01", "pass"),
        (1.02, "<= 1.01", "miss"),
        (0.99, "< 1", "pass"),
        (1.0, "< 1", "miss"),
        (3.0, ">= 3", "pass"),
        (2.9, ">= 3", "miss"),
        ("yes", "identical", "pass"),
        ("no", "identical", "miss"),
        (0.5, "reported", "reported"),
        ("failed (exit 1)", "error", "error"),
    ],
)
def test_verdict_compares_the_measured_figure_with_its_target(measured, target, expected):
    assert run_all.verdict(Row("figure", measured, target)) == expected


def test_a_target_that_cannot_be_judged_is_refused_naming_the_figure():
    with pytest.raises(ValueError, match="ticket size"):
        run_all.verdict(Row("ticket size", "yes", "<= 1.01"))
    with pytest.raises(ValueError, match="about 3"):
        run_all.verdict(Row("loader", 4.0, "about 3"))


def test_the_table_has_one_line_per_row_with_its_verdict():
    rows = [
        Row("1. bits", 1.0013, "<= 1.01"),
        Row("3. memory", 1.66, "<= 1.1", unit="x"),
        Row("6. matmul", 0.5, "reported", unit="x"),
        run_all.failed_row("zero3_memory", 1),
    ]
    lines = run_all.table(rows).splitlines()
    assert lines[0] == "| figure | measured | target | verdict |"
    assert lines[2:] == [
        "| 1. bits | 1.001 | <= 1.01 | pass |",
        "| 3. memory | 1.66 x | <= 1.1 | miss |",
        "| 6. matmul | 0.5 x | - | reported |",
        "| zero3_memory.py | failed (exit 1) | - | error |",
    ]


def test_rows_written_by_a_script_read_back_unchanged(tmp_path, capsys):
    rows = [
        Row("2. broadcast", 0.27, "< 1", unit="s", note="median of 5"),
        Row("4. same", "yes", "identical"),
    ]
    emit(rows, tmp_path / "rows.json")
    assert read_rows(tmp_path / "rows.json") == rows
    assert "2. broadcast: 0.27 s  [target < 1]  (median of 5)" in capsys.readouterr().out


def test_a_failing_script_becomes_one_error_row_and_a_good_one_gives_its_rows(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken.py").write_text("import sys\nprint('half way', flush=True)\nsys.exit(3)\n")
    (tmp_path / "good.py").write_text(
        "import json, sys\n"
        "path = sys.argv[sys.argv.index('--json') + 1]\n"
        "rows = [{'figure': 'f', 'measured': 2.5, 'target': '>= 3', 'unit': 'x', 'note': ''}]\n"
        "open(path, 'w').write(json.dumps(rows))\n"
    )
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    rows, seconds = run_all.run_script("broken", quick=True)
    assert rows == [run_all.failed_row("broken", 3)] and seconds > 0
    assert "half way" in capsys.readouterr().out
    rows, _ = run_all.run_script("good", quick=False)
    assert [run_all.verdict(row) for row in rows] == ["miss"]


def test_the_tiny_scope_is_the_default_scope_of_a_smaller_encoder():
    shapes = tiny_shapes(layers=2, hidden=16)
    assert prunable_names(shapes, DEFAULT_SCOPE) == list(shapes)
    assert sum(math.prod(s) for s in shapes.values()) == 2 * (4 * 16**2 + 2 * 16 * 64) + 16**2  # 6400


def test_figure_1_is_one_bit_per_weight_plus_a_header_that_dominates_a_tiny_scope():
    masks = random_masks(tiny_shapes(layers=2, hidden=16), 0.6)
    bits, size, header = ticket_bits.bits_per_weight(masks, "uniter-tiny")
    assert size - header == 6400 // 8  # the body: every mask packed to exactly one bit a weight
    assert bits == pytest.approx(8 * size / 6400)
    assert 0.55 < masks.sparsity < 0.65
    # a few KB of names and shapes swamp 800 bytes of bits: why figure 1 is measured at uniter-base scope
    row = ticket_bits.measure(tiny_shapes(layers=2, hidden=16), "uniter-tiny")
    assert row.measured == pytest.approx(bits) and run_all.verdict(row) == "miss"
