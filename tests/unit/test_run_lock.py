"""One live job per run directory: refusal naming the holder, takeover of locks whose holder is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest

from lottery import run_lock
from lottery.run_lock import LOCK_NAME, Holder, RunBusy, RunLock


def _write_holder(path, holder: Holder, age_s: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(holder)))
    when = time.time() - age_s
    os.utime(path, (when, when))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_job_on_a_held_directory_is_refused_with_the_holder_named(tmp_path) -> None:
    holder = replace(Holder.this_process(), pid=os.getppid())  # a live process that is not us
    _write_holder(tmp_path / LOCK_NAME, holder)
    with pytest.raises(RunBusy, match=rf"pid {holder.pid} on {holder.host}.*remove .*{LOCK_NAME}"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid  # left untouched


def test_the_lock_is_held_for_the_body_and_removed_after(tmp_path) -> None:
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        other = RunLock(tmp_path)
        other.me = replace(other.me, pid=os.getppid())
        with pytest.raises(RunBusy):
            other.acquire()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_job_that_wrote_nothing_leaves_no_directory_behind(tmp_path) -> None:
    run_dir = tmp_path / "runs" / "job"
    with RunLock(run_dir):
        assert run_dir.is_dir()
    assert not (tmp_path / "runs").exists(), "the directories made for the lock are removed when empty"
    with RunLock(run_dir):
        (run_dir / "metrics.json").write_text("{}")
    assert (run_dir / "metrics.json").exists(), "what the job wrote stays"
    with RunLock(run_dir):
        pass
    assert run_dir.is_dir(), "a directory that existed before the lock is not removed"


def test_a_lock_whose_pid_is_gone_on_this_host_is_taken_over(tmp_path) -> None:
    _write_holder(tmp_path / LOCK_NAME, replace(Holder.this_process(), pid=_dead_pid()))
    with RunLock(tmp_path) as lock:
        assert lock.took_over is not None and "no longer runs" in lock.took_over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_requeued_slurm_job_takes_over_its_own_lock_from_another_node(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    _write_holder(tmp_path / LOCK_NAME, Holder(pid=1, host="node-a", slurm_job="4242", started=0.0))
    with RunLock(tmp_path) as lock:
        assert "requeued" in (lock.took_over or "")


def test_a_lock_from_another_host_is_live_until_its_heartbeat_stops(tmp_path) -> None:
    other = Holder(pid=1, host="node-a", slurm_job="", started=0.0)
    _write_holder(tmp_path / LOCK_NAME, other, age_s=10.0)
    with pytest.raises(RunBusy, match="node-a"):
        RunLock(tmp_path).acquire()
    _write_holder(tmp_path / LOCK_NAME, other, age_s=run_lock.STALE_AFTER_S + 1)
    with RunLock(tmp_path) as lock:
        assert "heartbeat" in (lock.took_over or "")


def test_the_holder_refreshes_its_heartbeat(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    with RunLock(tmp_path) as lock:
        old = time.time() - 100
        os.utime(lock.path, (old, old))
        time.sleep(0.3)
        assert time.time() - lock.path.stat().st_mtime < 5


def test_a_lock_file_being_written_is_not_taken_over(tmp_path) -> None:
    (tmp_path / LOCK_NAME).write_text("")
    with pytest.raises(RunBusy, match="taking this directory"):
        RunLock(tmp_path).acquire()


def test_a_second_pretraining_on_a_held_run_directory_exits_4_naming_the_holder(tmp_path, capsys) -> None:
    """The job is refused before it builds or trains anything: the lock is its first step."""
    from lottery.cli import EXIT_RUN_BUSY, main

    held = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from lottery.run_lock import RunLock; RunLock({str(held)!r}).acquire(); "
            "import time; print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as exit_info:
            main(["pretrain", f"run_dir={held}", f"data.dir={tmp_path / 'never-built'}"])
        assert exit_info.value.code == EXIT_RUN_BUSY
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"pid {holder.pid}" in message and str(held) in message
        assert not (tmp_path / "never-built").exists()
    finally:
        holder.kill()
        holder.wait()
