"""The test harness itself: a launched command that hangs must not outlive its test."""

from __future__ import annotations

import sys
import time

import pytest
from conftest import run


def _state(pid: int) -> str:
    """The process state letter of `pid` ("Z": a zombie, dead), or "gone"."""
    try:
        return open(f"/proc/{pid}/status").read().split("State:")[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_timed_out_launcher_is_killed_with_the_ranks_it_started(tmp_path):
    """subprocess.run's timeout kills the launcher only; its ranks went on holding the CPU and ports."""
    marker = tmp_path / "rank.pid"
    launcher = (
        "import subprocess, sys, time; "
        "rank = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open({str(marker)!r}, 'w').write(str(rank.pid)); time.sleep(120)"
    )
    with pytest.raises(AssertionError, match="timed out after 3 s"):
        run([sys.executable, "-c", launcher], timeout=3)
    rank = int(marker.read_text())
    for _ in range(50):
        if _state(rank) in ("gone", "Z"):
            break
        time.sleep(0.1)
    assert _state(rank) in ("gone", "Z")
