"""Progress off a terminal (a SLURM .out file, a CI log) is whole lines, never carriage-return redraws."""

from __future__ import annotations

import io

from lottery import progress
from lottery.progress import progress_bar


def test_a_bar_in_a_log_file_writes_whole_lines_and_no_carriage_returns(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    log = io.StringIO()
    bar = progress_bar(total=5, desc="pretrain", stream=log, initial=0)
    bar.miniters = 0  # redraw on every update: the worst case for a log file
    for _ in range(5):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 2 and all(line.startswith("pretrain") for line in lines), text
    assert "5/5" in lines[-1]


def test_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    with progress_bar(total=3, desc="x", stream=log, enabled=False) as bar:
        bar.update(3)
    assert log.getvalue() == ""
