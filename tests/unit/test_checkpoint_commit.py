"""`latest` is the commit point of a checkpoint: it names a tag only after every rank's files are written.

A fake engine behaves as DeepSpeed 0.19.8's ``save_checkpoint`` does on rank 0: it writes rank 0's files
and, unless ``save_latest=False``, the ``latest`` pointer, before the barrier that waits for the other
ranks. The other ranks' shards reach the disk at that barrier (the fake `dist.barrier`), which is where
a job killed mid-save dies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lottery import dist
from lottery.faults import InjectedFault
from lottery.train import checkpoint
from lottery.train.checkpoint import checkpoint_dir, latest_step, resume_step, save_checkpoint


class Killed(Exception):
    """The job dying where it stands (a SIGKILL, in one process)."""


class FakeEngine:
    """Rank 0 of a 2-rank ZeRO job, as far as the files of a checkpoint go."""

    def __init__(self) -> None:
        self.tag = ""
        self.save_dir = Path()
        self.pointed_early: list[str] = []  # tags `latest` named before rank 1's shard was written
        self.kill_at_barrier_of: str | None = None

    def save_checkpoint(self, save_dir, tag=None, client_state=None, save_latest=True) -> bool:
        self.save_dir, self.tag = Path(save_dir), str(tag)
        (self.save_dir / self.tag).mkdir(parents=True, exist_ok=True)
        (self.save_dir / self.tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_text("rank 0")
        if save_latest:  # DeepSpeed: rank 0 writes the pointer after its own files, before the barrier
            (self.save_dir / "latest").write_text(self.tag)
        return True

    def peer_shard(self, tag: str) -> Path:
        return self.save_dir / tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt"

    def barrier(self) -> None:
        """Where rank 1's shard of the tag in flight reaches the disk, or the job dies waiting for it."""
        pointer = self.save_dir / "latest"
        if pointer.is_file() and pointer.read_text().strip() == self.tag:
            self.pointed_early.append(self.tag)
        if self.tag == self.kill_at_barrier_of:
            raise Killed(self.tag)
        self.peer_shard(self.tag).write_text("rank 1")


@pytest.fixture
def engine(monkeypatch) -> FakeEngine:
    fake = FakeEngine()
    monkeypatch.setattr(dist, "barrier", fake.barrier)
    return fake


def test_latest_names_a_tag_only_after_every_rank_wrote_its_shard(tmp_path, engine):
    save_checkpoint(engine, tmp_path, 3)
    assert engine.pointed_early == []
    assert (checkpoint_dir(tmp_path) / "latest").read_text() == "step_000003"
    assert latest_step(tmp_path) == 3


def test_a_job_killed_before_the_pointer_resumes_from_the_previous_checkpoint(tmp_path, engine):
    save_checkpoint(engine, tmp_path, 3)
    engine.kill_at_barrier_of = "step_000006"
    with pytest.raises(Killed):
        save_checkpoint(engine, tmp_path, 6)
    assert not engine.peer_shard("step_000006").exists()  # the tag on disk is incomplete
    assert latest_step(tmp_path) == 3 and resume_step(tmp_path) == 3

    engine.kill_at_barrier_of = None  # the rerun resumes from step 3 and saves step 6 again, whole
    save_checkpoint(engine, tmp_path, 6)
    assert latest_step(tmp_path) == 6 and engine.peer_shard("step_000006").is_file()


def test_a_kill_at_the_fault_point_before_the_pointer_keeps_the_previous_one(tmp_path, engine, monkeypatch):
    save_checkpoint(engine, tmp_path, 3)

    def fault_point(name: str) -> None:
        if name == "checkpoint.before_latest":
            raise Killed(name)

    monkeypatch.setattr(checkpoint, "fault_point", fault_point)
    with pytest.raises(Killed):
        save_checkpoint(engine, tmp_path, 6)
    assert engine.peer_shard("step_000006").is_file() and latest_step(tmp_path) == 3


def test_a_failing_commit_on_rank_0_leaves_the_pointer_alone(tmp_path, engine, monkeypatch):
    save_checkpoint(engine, tmp_path, 3)
    monkeypatch.setenv("LOTTERY_RAISE", "checkpoint.commit")
    with pytest.raises(InjectedFault, match="checkpoint.commit"):
        save_checkpoint(engine, tmp_path, 6)
    assert latest_step(tmp_path) == 3


def test_old_tags_go_after_a_newer_one_is_committed_and_half_written_newer_tags_too(tmp_path, engine):
    for step in (2, 4):
        save_checkpoint(engine, tmp_path, step)
    (checkpoint_dir(tmp_path) / "step_000008").mkdir()  # left by an attempt killed while saving step 8
    save_checkpoint(engine, tmp_path, 6)
    tags = sorted(p.name for p in checkpoint_dir(tmp_path).glob("step_*"))
    assert tags == ["step_000004", "step_000006"]


@pytest.mark.parametrize("text", ["", "global_step7", "step_000009", "step_abc"])
def test_a_pointer_that_names_no_checkpoint_is_an_error_naming_it(tmp_path, text):
    root = checkpoint_dir(tmp_path)
    (root / "step_000003").mkdir(parents=True)
    (root / "latest").write_text(text)
    with pytest.raises(RuntimeError, match="which is not a checkpoint"):
        latest_step(tmp_path)


def test_no_pointer_is_a_new_run(tmp_path):
    assert latest_step(tmp_path) is None and resume_step(tmp_path) is None
