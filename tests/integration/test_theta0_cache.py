"""theta0 is built once per config, reused after, rebuilt for another config, and resumed if stopped."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import REPO, kill_job, quick_overrides, run, torchrun

pytestmark = pytest.mark.distributed


def _theta0(run_dir, shapes_dir, model_dir, **extra):
    return run(
        torchrun()
        + ["-m", "lottery", "theta0"]
        + quick_overrides(run_dir, shapes_dir, model_dir, **{"train.zero_stage": 0}, **extra)
    )


def test_theta0_is_built_once_reused_and_a_stopped_build_resumes(
    tmp_path, monkeypatch, shapes_dir, mini_model_dir, deepspeed_ops
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOTTERY_THETA0_CACHE", str(cache))

    stopped = _theta0(tmp_path / "a", shapes_dir, mini_model_dir, **{"train.stop_after_steps": 5})
    assert "stopped after step 5 of 12" in stopped.stdout
    (built,) = cache.iterdir()
    assert not (built / "DONE").exists()

    # another run_dir does not change what theta0 is: the same cache entry, resumed
    resumed = _theta0(tmp_path / "b", shapes_dir, mini_model_dir)
    assert "resumed from the checkpoint at step 5" in resumed.stdout
    assert (built / "DONE").is_file() and (built / "curves.png").stat().st_size > 0
    assert "ITM accuracy" in resumed.stdout and str(built / "model") in resumed.stdout

    again = _theta0(tmp_path / "c", shapes_dir, mini_model_dir)
    assert "building" not in again.stdout and "pretrain" not in again.stderr
    assert "ITM accuracy" in again.stdout

    # another seed is another theta0 (one step of it shows where it goes)
    _theta0(tmp_path / "d", shapes_dir, mini_model_dir, **{"train.seed": 1, "train.stop_after_steps": 1})
    assert len(list(cache.iterdir())) == 2


def test_a_theta0_build_killed_with_sigkill_resumes_and_finishes(
    tmp_path, monkeypatch, shapes_dir, mini_model_dir, deepspeed_ops
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOTTERY_THETA0_CACHE", str(cache))
    extra = {"train.ckpt_every": 3, "train.steps": 9}  # killed at its first checkpoint, 6 steps to go
    cmd = torchrun()
    cmd += ["-m", "lottery", "theta0"] + quick_overrides(tmp_path / "a", shapes_dir, mini_model_dir, **extra)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not list(cache.glob("*/checkpoints/latest")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the build ended before it could be killed"
        time.sleep(0.2)
    kill_job(proc.pid)  # the launcher and its ranks
    proc.wait()
    (built,) = cache.iterdir()
    assert not (built / "DONE").exists() and not (built / "model").exists()

    resumed = run(torchrun() + cmd[7:])  # the same job on a fresh port
    assert "resumed from the checkpoint at step" in resumed.stdout, resumed.stdout + resumed.stderr[-3000:]
    assert (built / "DONE").is_file()
