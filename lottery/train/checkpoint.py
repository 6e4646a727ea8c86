"""DeepSpeed checkpoints of a run in flight: ``<run_dir>/checkpoints/step_NNNNNN`` plus ``latest``.

``latest`` is the commit point: it names a tag only once every rank's files of that tag are on disk,
so a job killed mid-save resumes from the previous tag. DeepSpeed's own pointer cannot promise that:
its ``save_checkpoint`` has rank 0 write ``latest`` right after rank 0's own files, before the barrier
that waits for the other ranks' ZeRO shards, so a kill in that window leaves a pointer to a tag that
every later resume fails to load. Hence ``save_latest=False``, a barrier, an fsync of the tag's files,
and rank 0 writing the pointer itself (atomically). Older tags are removed only after a newer one is
complete.

Rank-0 sites (``dist.on_main``; ``LOTTERY_RAISE=<name>`` fails one in tests):
``checkpoint.latest_step`` (reading ``latest`` to resume) and ``checkpoint.commit`` (fsync, writing
``latest``, removing old tags). Fault points (``LOTTERY_FAULT``), every rank: ``checkpoint.written``
once its own files of the tag are written, before the other ranks' are known to be, and
``checkpoint.before_latest`` after every rank's files are written and before ``latest`` names the tag.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lottery import dist
from lottery.faults import fault_point
from lottery.files import fsync_tree, write_text_atomic

KEEP_LAST = 2
POINTER = "latest"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _tag(step: int) -> str:
    return f"step_{step:06d}"


def _tag_step(tag: str) -> int | None:
    digits = tag.removeprefix("step_")
    return int(digits) if tag.startswith("step_") and digits.isdigit() else None


def latest_step(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint, or None when the run has none yet (this rank's read)."""
    pointer = checkpoint_dir(run_dir) / POINTER
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    step = _tag_step(tag)
    if step is None or not (checkpoint_dir(run_dir) / tag).is_dir():
        raise RuntimeError(f"{pointer} names {tag!r}, which is not a checkpoint in {checkpoint_dir(run_dir)}")
    return step


def resume_step(run_dir: Path) -> int | None:
    """`latest_step` as rank 0 reads it, on every rank (collective): ranks that decided apart would deadlock."""
    return dist.on_main(lambda: latest_step(run_dir), what="checkpoint.latest_step")


def _commit(run_dir: Path, step: int) -> None:
    """Rank 0, once every rank's files of `step` are written: name it in `latest`, drop older tags."""
    root = checkpoint_dir(run_dir)
    fsync_tree(root / _tag(step))  # the tag's files whole on disk before `latest` names them
    write_text_atomic(root / POINTER, _tag(step))  # fsyncs `root` after the rename
    tags = sorted(p for p in root.glob("step_*") if p.is_dir() and _tag_step(p.name) is not None)
    older = [p for p in tags if _tag_step(p.name) <= step]
    # a tag newer than the one just committed is what a killed attempt left half-written
    stale = older[:-KEEP_LAST] + [p for p in tags if _tag_step(p.name) > step]
    for old in stale:
        shutil.rmtree(old, ignore_errors=True)


class CheckpointWriteError(RuntimeError):
    """A checkpoint's files could not be written (a full disk, a quota): the previous one still stands."""


def _write_failed(root: Path, tag: str, err: BaseException) -> CheckpointWriteError:
    """The one-line error for a failed save: where, why, how much room is left, what a rerun resumes."""
    try:
        free = f"{shutil.disk_usage(root).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    pointer = root / POINTER
    kept = (
        f"{pointer} still names {pointer.read_text().strip()}"
        if pointer.is_file()
        else "no earlier checkpoint"
    )
    reason = " ".join(str(err).split())[:300]
    return CheckpointWriteError(
        f"could not write {root / tag} ({type(err).__name__}: {reason}; {free}); {kept}, which the same "
        "command resumes from once there is room"
    )


def save_checkpoint(engine, run_dir: Path, step: int) -> None:
    """Collective: every rank writes its partition of model and optimiser state, then rank 0 commits it.

    A rank that cannot write its files (ENOSPC surfaces from torch.save as a RuntimeError) raises
    CheckpointWriteError naming the tag; `latest` is untouched, so the previous checkpoint resumes. A
    peer still inside DeepSpeed's save is ended by the launcher when this rank exits.
    """
    root = checkpoint_dir(run_dir)
    try:
        engine.save_checkpoint(str(root), tag=_tag(step), client_state={"step": step}, save_latest=False)
    except (OSError, RuntimeError) as err:
        raise _write_failed(root, _tag(step), err) from err
    fault_point("checkpoint.written")
    dist.barrier()  # every rank's files of this tag are written (DeepSpeed's own barrier is no promise)
    fault_point("checkpoint.before_latest")
    dist.on_main(lambda: _commit(run_dir, step), what="checkpoint.commit")


def load_checkpoint(engine, run_dir: Path, step: int | None = None) -> int:
    """Collective: restore model, optimiser, scheduler; returns the step the checkpoint was taken at.

    `step` names the checkpoint (default: `latest`); callers pass the step rank 0 read, so no rank can
    load another tag than the others.
    """
    tag = None if step is None else _tag(step)
    path, client_state = engine.load_checkpoint(str(checkpoint_dir(run_dir)), tag=tag)
    if path is None or client_state is None:
        raise RuntimeError(f"could not load the checkpoint {tag or POINTER} from {checkpoint_dir(run_dir)}")
    return int(client_state["step"])
