"""2-rank pre-training through the real launchers: it learns, and resume is exact, also after a stop signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, REPO, free_port, kill_job, quick_overrides, run, torchrun

from lottery.train.metrics import read_metrics

pytestmark = pytest.mark.distributed


def _val(records: list[dict]) -> dict[int, dict]:
    return {r["step"]: r["val"] for r in records if "val" in r}


def _assert_learned_on_two_ranks(run_dir):
    records = read_metrics(run_dir / "metrics.jsonl")
    val = _val(records)
    assert val[12]["loss"] < val[0]["loss"], val
    assert {r["world_size"] for r in records if "val" not in r} == {2}
    assert (run_dir / "model" / "model.safetensors").is_file()


# one stage here: ZeRO-0 pre-training runs in every theta0 build and the main job, ZeRO-3 in the IMP
# tests (each round is a pre-training run); the masks on every stage are test_enforce_matrix.py's
@pytest.mark.parametrize("stage", [2])
def test_deepspeed_launcher_two_ranks_lowers_val_loss(
    stage, tmp_path, shapes_dir, mini_model_dir, deepspeed_ops
):
    run_dir = tmp_path / f"zero{stage}"
    run(
        ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "--module", "lottery", "pretrain"]
        + quick_overrides(run_dir, shapes_dir, mini_model_dir, **{"train.zero_stage": stage})
    )
    _assert_learned_on_two_ranks(run_dir)


def test_accelerate_launch_two_ranks_lowers_val_loss(tmp_path, shapes_dir, mini_model_dir, deepspeed_ops):
    run_dir = tmp_path / "accelerate"
    run(
        ["accelerate", "launch", "--config_file", "launch/accelerate/two_ranks.yaml"]
        + ["--main_process_port", str(free_port()), "-m", "lottery", "pretrain"]
        + quick_overrides(run_dir, shapes_dir, mini_model_dir, **{"train.zero_stage": 1})
    )
    _assert_learned_on_two_ranks(run_dir)


# 7 steps of single-object scenes, then the main scenes: the stop at step 5 falls inside the phase
CURRICULUM = {"data.curriculum": "[{steps: 7, train_samples: 256}]"}


def _torchrun(run_dir, shapes_dir, model_dir, **extra):
    return run(
        torchrun()
        + ["-m", "lottery", "pretrain"]
        + quick_overrides(run_dir, shapes_dir, model_dir, **{"train.zero_stage": 2, **CURRICULUM}, **extra)
    )


@pytest.fixture(scope="module")
def whole(tmp_path_factory, shapes_dir, mini_model_dir, deepspeed_ops) -> Path:
    """The uninterrupted run the stopped-and-resumed ones must match."""
    run_dir = tmp_path_factory.mktemp("pretrain") / "whole"
    _torchrun(run_dir, shapes_dir, mini_model_dir)
    _assert_learned_on_two_ranks(run_dir)
    return run_dir


def _assert_same_losses_after(stop: int, resumed: Path, whole: Path) -> None:
    expected = {r["step"]: r["loss"] for r in read_metrics(whole / "metrics.jsonl") if "val" not in r}
    got = {r["step"]: r["loss"] for r in read_metrics(resumed / "metrics.jsonl") if "val" not in r}
    assert sorted(got) == list(range(1, 13))
    for step in range(stop + 1, 13):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    assert _val(read_metrics(resumed / "metrics.jsonl"))[12]["loss"] == pytest.approx(
        _val(read_metrics(whole / "metrics.jsonl"))[12]["loss"], rel=1e-5
    )


def test_torchrun_resume_after_a_stop_continues_with_the_same_losses_across_a_curriculum_phase(
    tmp_path, shapes_dir, mini_model_dir, whole
):
    resumed = tmp_path / "resumed"
    first = _torchrun(resumed, shapes_dir, mini_model_dir, **{"train.stop_after_steps": 5})
    assert "stopped after step 5 of 12" in first.stdout
    assert not (resumed / "DONE").exists(), "a run stopped part-way is marked done"
    second = _torchrun(resumed, shapes_dir, mini_model_dir)
    assert (resumed / "DONE").is_file()
    assert "resumed from the checkpoint at step 5" in second.stdout
    assert "step 8: scenes of" in second.stdout
    _assert_same_losses_after(5, resumed, whole)


def _rank_pids(launcher: int) -> dict[int, int]:
    """RANK -> pid of the launcher's worker processes (read from their environments)."""
    found = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{launcher}\n" not in status.read_text():
                continue
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks = [int(v.split(b"=")[1]) for v in environ if v.startswith(b"RANK=")]
        if ranks:
            found[ranks[0]] = int(status.parent.name)
    return found


def test_a_sigusr1_to_one_rank_stops_every_rank_at_one_step_checkpointed_and_the_rerun_matches(
    tmp_path, shapes_dir, mini_model_dir, whole
):
    """SLURM's --signal=USR1@T before a preemption may reach one task first: every rank must stop at
    the same step boundary, write that step's checkpoint and exit, and the rerun must continue exactly."""
    signalled = tmp_path / "signalled"
    overrides = quick_overrides(
        signalled,
        shapes_dir,
        mini_model_dir,
        **{"train.zero_stage": 2, "train.ckpt_every": 100, **CURRICULUM},
    )
    cmd = torchrun() + ["-m", "lottery", "pretrain", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        metrics = signalled / "metrics.jsonl"
        while time.monotonic() < deadline and proc.poll() is None:
            if (
                metrics.exists()
                and sum('"loss"' in line and '"val"' not in line for line in metrics.read_text().splitlines())
                >= 3
            ):
                break
            time.sleep(0.1)
        ranks = _rank_pids(proc.pid)
        assert set(ranks) == {0, 1}, ranks
        os.kill(ranks[1], signal.SIGUSR1)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            kill_job(proc.pid)
    assert proc.returncode != 0, out[-3000:]
    stops = sorted(set(re.findall(r"stopped after step (\d+) on SIGUSR1", out)))
    assert len(stops) == 1, out[-3000:]  # both ranks name the same step
    stop = int(stops[0])
    assert 3 <= stop < 12
    assert (signalled / "checkpoints" / "latest").read_text().strip() == f"step_{stop:06d}"

    rerun = _torchrun(signalled, shapes_dir, mini_model_dir, **{"train.ckpt_every": 100})
    assert f"resumed from the checkpoint at step {stop}" in rerun.stdout
    _assert_same_losses_after(stop, signalled, whole)
