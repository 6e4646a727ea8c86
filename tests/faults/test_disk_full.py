"""A disk that fills up while a checkpoint is written: one line, exit 7, and the previous checkpoint resumes.

The run directory is a small tmpfs mounted for the test (root only: mounting needs CAP_SYS_ADMIN). Its
size is set from the first checkpoint the run writes, so the second does not fit whatever the model's
size; then it is grown again, as a user freeing space would, and the same command resumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import quick_overrides, run

from lottery.train.metrics import read_metrics

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]


def mount_tmpfs(where: Path, size: int) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)


def resize(where: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


def used_bytes(where: Path) -> int:
    return sum(p.stat().st_size for p in where.rglob("*") if p.is_file())


def test_a_full_disk_mid_checkpoint_is_one_line_and_the_previous_checkpoint_resumes(
    tmp_path, shapes_dir, mini_model_dir
):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount_tmpfs(disk, 8 * 2**30)
    try:
        run_dir = disk / "run"
        settings = {"train.steps": 4, "train.ckpt_every": 2, "train.val_every": 4, "train.val_batches": 1}
        overrides = quick_overrides(run_dir, shapes_dir, mini_model_dir, **settings)
        command = [sys.executable, "-m", "lottery", "pretrain", *overrides]
        run(command + ["train.stop_after_steps=2"], timeout=300)
        pointer = run_dir / "checkpoints" / "latest"
        assert pointer.read_text().strip() == "step_000002"

        one_checkpoint = used_bytes(run_dir / "checkpoints" / "step_000002")
        resize(disk, used_bytes(disk) + one_checkpoint // 2)
        full = run(command, timeout=300, check=False)
        assert full.returncode == 7, full.stderr[-3000:]
        errors = [line for line in full.stderr.splitlines() if line.startswith("lottery: ")]
        assert len(errors) == 1, full.stderr[-3000:]
        assert (
            "checkpoint not written: could not write " + str(run_dir / "checkpoints" / "step_000004")
            in errors[0]
        )
        assert "MiB free there" in errors[0] and "still names step_000002" in errors[0], errors[0]
        assert "Traceback" not in full.stderr
        assert pointer.read_text().strip() == "step_000002"
        assert not (run_dir / "model").exists(), "a model was written by a run that failed"

        resize(disk, 8 * 2**30)  # the user frees space
        resumed = run(command, timeout=300)
        assert "resumed from the checkpoint at step 2" in resumed.stdout
        assert pointer.read_text().strip() == "step_000004"
        steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "val" not in r]
        assert steps[-2:] == [3, 4]
        assert (run_dir / "model" / "model.safetensors").is_file()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
