"""Launch a job whose ranks may hang, and read what each rank wrote.

`conftest.run` kills only the launcher on a timeout, which leaves hung ranks running; a test whose
failure mode is a hang needs the launcher's whole process group gone when its time is up.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import BIN, REPO, kill_job


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: still running at the timeout (hung), then killed
    seconds: float
    stdout: str
    stderr: str


def run_group(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> Outcome:
    """Run `cmd` from the repo root in a new session; SIGKILL it and its ranks at `timeout`."""
    full_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env or {})
    began = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=full_env,
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        kill_job(proc.pid)
        out, err = proc.communicate()
        code = None
    return Outcome(code, time.monotonic() - began, out, err)


def torchrun_logs(log_dir: Path) -> list[str]:
    """What each local rank wrote (stdout then stderr), in rank order, from torchrun's `--log-dir`."""
    by_rank: dict[int, str] = {}
    for path in sorted(Path(log_dir).rglob("std*.log")):
        rank = int(path.parent.name)
        by_rank[rank] = by_rank.get(rank, "") + path.read_text()
    return [by_rank[r] for r in sorted(by_rank)]


def torchrun_logged(log_dir: Path) -> list[str]:
    """torchrun options that send each rank's stdout and stderr to files under `log_dir`."""
    return ["--log-dir", str(log_dir), "--redirects", "3"]
