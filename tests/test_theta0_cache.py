"""theta0 is built once per config, reused after, rebuilt for another config, and resumed if stopped."""

from __future__ import annotations

import sys

import pytest
from conftest import free_port, quick_overrides, run

pytestmark = pytest.mark.distributed


def _theta0(run_dir, shapes_dir, model_dir, **extra):
    return run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
        ]
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

    _theta0(tmp_path / "d", shapes_dir, mini_model_dir, **{"train.seed": 1})
    assert len(list(cache.iterdir())) == 2
