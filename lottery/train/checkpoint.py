"""DeepSpeed checkpoints of a run in flight: ``<run_dir>/checkpoints/step_NNNNNN`` plus ``latest``.

DeepSpeed writes the ``latest`` pointer only after a tag is complete, so a job killed mid-save resumes
from the previous tag. Older tags are removed only after a newer one is complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lottery import dist

KEEP_LAST = 2


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _tag(step: int) -> str:
    return f"step_{step:06d}"


def latest_step(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint, or None when the run has none yet."""
    pointer = checkpoint_dir(run_dir) / "latest"
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not tag.startswith("step_") or not (checkpoint_dir(run_dir) / tag).is_dir():
        raise RuntimeError(f"{pointer} names {tag!r}, which is not a checkpoint in {checkpoint_dir(run_dir)}")
    return int(tag.removeprefix("step_"))


def save_checkpoint(engine, run_dir: Path, step: int) -> None:
    """Collective: every rank writes its partition of model and optimiser state."""
    engine.save_checkpoint(str(checkpoint_dir(run_dir)), tag=_tag(step), client_state={"step": step})
    dist.barrier()
    if dist.is_main():
        tags = sorted(p for p in checkpoint_dir(run_dir).glob("step_*") if p.is_dir())
        for old in tags[:-KEEP_LAST]:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(engine, run_dir: Path, step: int | None = None) -> int:
    """Collective: restore model, optimiser, scheduler; returns the step the checkpoint was taken at.

    `step` names the checkpoint (default: `latest`); callers pass the step rank 0 read, so no rank can
    load another tag than the others.
    """
    tag = None if step is None else _tag(step)
    path, client_state = engine.load_checkpoint(str(checkpoint_dir(run_dir)), tag=tag)
    if path is None or client_state is None:
        raise RuntimeError(f"could not load the latest checkpoint from {checkpoint_dir(run_dir)}")
    return int(client_state["step"])
