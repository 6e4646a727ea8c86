"""Files and directories written whole or not at all: the one place the project writes atomically.

A reader, or a job restarted after a kill, must see the old file or the complete new one, never a
part. Each writer builds its output beside the target (same file system, so the rename is atomic),
fsyncs it, renames it into place and fsyncs the directory: without the first fsync a crash after the
rename can leave an empty file under the new name, without the second the rename itself can be lost.
A killed writer leaves at most a hidden temp file or directory, which no reader looks at.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from lottery.faults import fault_point

_CHUNK = 1 << 20
_PARTIAL = "partial"  # directories being written: .<name>.partial-<host>-<pid>-<token>


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; some network file systems refuse fsync on a directory,
    which costs only durability there, so it is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(path: Path, tmp_dir: Path | None) -> tuple[int, Path]:
    """A new, exclusively created temp file for `path`: in `tmp_dir` (same file system) or beside it.

    The name is unique per process and call, so concurrent writers of one target never share one;
    0o666 under the umask gives the permissions a plain write would (mkstemp's 0o600 would hide a
    dataset from the other users of a shared disk).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    where = path.parent if tmp_dir is None else Path(tmp_dir)
    where.mkdir(parents=True, exist_ok=True)
    tmp = where / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


def _rename_into_place(tmp: Path, path: Path, fault: str | None) -> None:
    """The commit: after it the target is the new file, durably (the data was fsynced before)."""
    if fault is not None:
        fault_point(fault)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    if tmp.parent != path.parent:
        fsync_dir(tmp.parent)


def write_bytes_atomic(
    path: Path, data: bytes, *, tmp_dir: Path | None = None, fault: str | None = None
) -> Path:
    """Replace `path` by `data` atomically and durably; on any failure the old file stays, no temp does.

    `tmp_dir` holds the temp file when the target's own folder must only ever hold complete files
    (the ticket store). `fault` names a fault point reached between the fsync and the rename, where
    the tests kill a writer. Written with os.write, chunk by chunk, so no buffered copy of a large
    payload is made.
    """
    path = Path(path)
    fd, tmp = _create_temp(path, tmp_dir)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:_CHUNK]) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        _rename_into_place(tmp, path, fault)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str, *, tmp_dir: Path | None = None) -> Path:
    """`write_bytes_atomic` of `text` in UTF-8."""
    return write_bytes_atomic(path, text.encode("utf-8"), tmp_dir=tmp_dir)


def write_json_atomic(path: Path, payload: object, *, tmp_dir: Path | None = None) -> Path:
    """`payload` as indented JSON with sorted keys (a stable diff between reruns), atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True), tmp_dir=tmp_dir)


@contextmanager
def open_atomic(path: Path, *, tmp_dir: Path | None = None, buffering: int = -1) -> Iterator[BinaryIO]:
    """A binary file to stream into (a tar shard, a PNG, a CSV), renamed to `path` only if the block
    completes; when it raises, the old file stays and the temp is removed. `buffering` as for open()
    (a shard writer wants a large buffer)."""
    path = Path(path)
    fd, tmp = _create_temp(path, tmp_dir)
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _rename_into_place(tmp, path, None)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root`, so the renamed directory holds its data after a crash."""
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.{_PARTIAL}-{socket.gethostname()}-"


def _remove_dead_partials(target: Path) -> None:
    """Delete the partial directories this host's killed writers left for `target`.

    Only a directory whose writer is known dead is removed: same host (a pid means nothing on
    another node of a shared file system) and no process with that pid.
    """
    prefix = _partial_prefix(target)
    if not target.parent.is_dir():
        return
    for candidate in target.parent.glob(f"{prefix}*"):
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(candidate, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def _swap_in(partial: Path, target: Path, replace: bool) -> None:
    """Rename `partial` to `target`; an existing target is refused, or (`replace`) moved aside first.

    Replacing a directory cannot be one rename (rename(2) only replaces an empty one), so the old
    one is renamed aside, the new one in, and the old one deleted: a kill in between leaves the old
    directory as a hidden sibling, never a mix of old and new files under the target's name.
    """
    if not target.exists():
        os.rename(partial, target)  # a concurrent writer's non-empty target makes this fail, not merge
        fsync_dir(target.parent)
        return
    if not replace:
        raise FileExistsError(f"{target} already exists; remove it or write to another path")
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    os.rename(target, old)
    try:
        os.rename(partial, target)
    except BaseException:
        os.rename(old, target)  # put the old one back: the target is never left missing by an error
        raise
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty hidden sibling of `target` to fill; when the block completes it is fsynced and
    renamed to `target`, when it raises it is deleted, so `target` is complete or absent.

    An existing `target` is refused up front (before any work) unless `replace`, which swaps it for
    the new directory. Partial directories left by this host's killed writers are cleaned first.
    """
    target = Path(target)
    if target.exists() and not replace:
        raise FileExistsError(f"{target} already exists; remove it or write to another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(target)
    partial = target.with_name(f"{_partial_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}")
    partial.mkdir()
    try:
        yield partial
        fsync_tree(partial)
        _swap_in(partial, target, replace)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
