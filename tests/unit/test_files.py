"""lottery.files: a failed or killed write leaves the old file (or no directory) and no temp behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lottery import files
from lottery.files import (
    atomic_directory,
    open_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _disk_full(*args: object) -> None:
    raise OSError(28, "No space left on device")


def test_writers_create_the_folder_and_write_the_whole_content(tmp_path: Path) -> None:
    assert write_bytes_atomic(tmp_path / "a" / "b.bin", b"\x00\x01" * 3_000_000).stat().st_size == 6_000_000
    assert write_text_atomic(tmp_path / "t.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads(write_json_atomic(tmp_path / "j.json", {"b": 1, "a": [2]}).read_text()) == {
        "a": [2],
        "b": 1,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "j.json", "t.txt"]


def test_the_file_and_then_the_directory_are_fsynced_around_the_rename(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_text_atomic(tmp_path / "x.txt", "new")
    assert events == ["fsync file", "rename", "fsync dir"]


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failure_mid_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch, failing: str
) -> None:
    target = write_text_atomic(tmp_path / "state.json", "old")
    monkeypatch.setattr(os, failing, _disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failure_with_a_tmp_dir_leaves_it_empty(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError):
        write_bytes_atomic(tmp_path / "objects" / "x", b"data", tmp_dir=tmp_path / "tmp")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "objects").iterdir()) == []


def test_a_stream_that_raises_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = write_bytes_atomic(tmp_path / "shard.tar", b"old")
    with pytest.raises(RuntimeError), open_atomic(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed by a bug")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tar"]
    with open_atomic(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"


def test_the_temp_file_keeps_umask_permissions_not_mkstemps_private_ones(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        mode = write_text_atomic(tmp_path / "meta.json", "{}").stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert mode == 0o644


def test_a_directory_body_that_raises_leaves_no_partial_directory(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_directory(target) as partial:
        (partial / "config.json").write_text("{}")
        raise RuntimeError("save failed half-way")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_appears_whole_under_its_name(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "model"
    with atomic_directory(target) as partial:
        assert partial.parent == target.parent and partial.name.startswith(".")
        assert not target.exists()
        (partial / "weights").write_bytes(b"w")
        (partial / "sub").mkdir()
        (partial / "sub" / "tok.txt").write_text("t")
    assert (target / "weights").read_bytes() == b"w" and (target / "sub" / "tok.txt").read_text() == "t"
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_an_existing_directory_is_refused_before_any_work_or_replaced_on_request(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as partial:
        (partial / "old").write_text("old")
    with pytest.raises(FileExistsError, match="already exists"), atomic_directory(target):
        pytest.fail("the body must not run when the target exists")
    with atomic_directory(target, replace=True) as partial:
        (partial / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_replacement_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as partial:
        (partial / "old").write_text("old")
    with pytest.raises(ValueError), atomic_directory(target, replace=True) as partial:
        (partial / "new").write_text("new")
        raise ValueError("bad weights")
    assert [p.name for p in target.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_partials_of_dead_writers_on_this_host_are_cleaned_others_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "model"
    prefix = files._partial_prefix(target)
    dead = tmp_path / f"{prefix}999999999-abcd"  # above any pid_max: no such process
    alive = tmp_path / f"{prefix}{os.getppid()}-abcd"
    elsewhere = tmp_path / ".model.partial-otherhost-1-abcd"
    for folder in (dead, alive, elsewhere):
        folder.mkdir()
        (folder / "weights").write_bytes(b"half")
    with atomic_directory(target) as partial:
        (partial / "weights").write_bytes(b"whole")
    assert not dead.exists()
    assert alive.exists() and elsewhere.exists()
    assert (target / "weights").read_bytes() == b"whole"
