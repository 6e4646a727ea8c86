"""Ticket files and the ticket store: bit-exact, deterministic, content-addressed, never half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load as load_numpy
from ticket_fixtures import ODD_SHAPES as SHAPES
from ticket_fixtures import TICKET_META as META

from lottery import dist
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import DEFAULT_SCOPE
from lottery.tickets import (
    TicketError,
    TicketMeta,
    TicketStore,
    load_broadcast,
    read_header,
    read_ticket,
    ticket_bytes,
    ticket_id,
)
from lottery.tickets import distributed as tickets_distributed

REPO = Path(__file__).resolve().parents[1]


def pattern_masks(shapes: dict[str, tuple[int, ...]] = SHAPES, step: int = 7) -> MaskSet:
    """Masks from arithmetic (no RNG), so the expected file bytes never depend on a torch version."""
    return MaskSet(
        {
            name: (torch.arange(int(np.prod(shape))) * step % 5 < 2).reshape(shape)
            for name, shape in shapes.items()
        }
    )


def random_masks(seed: int, shapes: dict[str, tuple[int, ...]] = SHAPES) -> MaskSet:
    generator = torch.Generator().manual_seed(seed)
    return MaskSet({name: torch.rand(shape, generator=generator) < 0.4 for name, shape in shapes.items()})


def test_round_trip_is_bit_exact_for_sizes_not_multiple_of_8() -> None:
    masks = random_masks(0)
    ticket = read_ticket(ticket_bytes(masks, META), "memory")
    assert ticket.masks == masks
    assert list(ticket.masks.masks) == list(SHAPES)  # scope order kept: it is part of the fingerprint
    assert ticket.masks.fingerprint == masks.fingerprint
    assert ticket.masks.scope == DEFAULT_SCOPE
    assert ticket.meta == META
    assert ticket.sparsity == pytest.approx(masks.sparsity)


def test_same_masks_and_metadata_give_the_same_bytes_in_any_process() -> None:
    # The safetensors library writes its metadata map in a per-process hash order; our writer must not.
    # This digest was computed once; a change means every stored ticket would get a new id.
    data = ticket_bytes(pattern_masks(), META)
    assert data == ticket_bytes(pattern_masks(), META)
    assert ticket_id(data) == "67650dbb4596d188f02e84db5392c489f771077f739e2b07aa8e20a7fba5c2d2"


def test_file_is_one_bit_per_weight_plus_a_small_header() -> None:
    shapes = {"uniter.encoder.layer.0.intermediate.dense.weight": (301, 257), **SHAPES}
    masks = random_masks(1, shapes)
    data = ticket_bytes(masks, META)
    header = 8 + int.from_bytes(data[:8], "little")
    packed_bytes = sum((int(np.prod(s)) + 7) // 8 for s in shapes.values())  # 77357, 91, 55, 9 bits
    assert packed_bytes == 9670 + 12 + 7 + 2
    assert len(data) == header + packed_bytes
    assert header < 2048


def test_file_is_plain_safetensors_readable_with_numpy_alone(tmp_path: Path) -> None:
    masks = random_masks(2)
    path = tmp_path / "t.safetensors"
    path.write_bytes(ticket_bytes(masks, META))
    with safe_open(path, framework="numpy") as handle:
        metadata = handle.metadata()
    assert metadata["family"] == "uniter"
    assert metadata["model"] == "tiny"
    assert metadata["format_version"] == "1"
    assert metadata["imp_round"] == "2"
    assert metadata["method"] == "magnitude"
    assert json.loads(metadata["tasks"]) == ["itm", "mlm"]
    assert json.loads(metadata["scope"]) == list(DEFAULT_SCOPE)
    assert json.loads(metadata["shapes"]) == {n: list(s) for n, s in SHAPES.items()}
    assert metadata["fingerprint"] == masks.fingerprint
    assert float(metadata["sparsity"]) == pytest.approx(masks.sparsity)
    assert metadata["config_digest"] == "ab" * 32
    assert metadata["code_version"] == "0.1.0"
    tensors = load_numpy(path.read_bytes())
    name = "uniter.encoder.layer.0.attention.self.query.weight"
    bits = np.unpackbits(tensors[name], count=91, bitorder="big").reshape(13, 7).astype(bool)
    assert tensors[name].dtype == np.uint8 and tensors[name].shape == (12,)
    np.testing.assert_array_equal(bits, masks.masks[name].numpy())


def test_truncated_bytes_are_refused_as_unreadable_naming_the_source() -> None:
    data = ticket_bytes(random_masks(0), META)
    with pytest.raises(TicketError, match=r"^somewhere/t\.safetensors: truncated/unreadable safetensors"):
        read_ticket(data[:-3], "somewhere/t.safetensors")


def test_a_safetensors_file_that_is_not_a_ticket_is_refused() -> None:
    from safetensors.numpy import save

    data = save({"w": np.zeros(4, dtype=np.float32)}, metadata={"format": "pt"})
    with pytest.raises(TicketError, match=r"model\.safetensors: not a ticket"):
        read_ticket(data, "model.safetensors")
    with pytest.raises(TicketError, match="not a ticket"):
        read_header(data, "model.safetensors")


def test_edited_metadata_is_refused_by_the_fingerprint_consistency_check() -> None:
    data = ticket_bytes(random_masks(0), META)
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"]["fingerprint"] = "0" * 64
    text = json.dumps(header).encode()
    edited = len(text).to_bytes(8, "little") + text + data[8 + length :]
    with pytest.raises(TicketError, match=r"x: metadata check failed: recorded fingerprint 000000000000"):
        read_ticket(edited, "x")


def test_a_maskset_whose_fingerprint_is_not_its_layout_is_not_written() -> None:
    masks = random_masks(0)
    forged = MaskSet(dict(masks.masks), masks.scope, fingerprint="f" * 64)
    with pytest.raises(ValueError, match="not the fingerprint of its own names and shapes"):
        ticket_bytes(forged, META)


# --- the store ---------------------------------------------------------------------------------


def test_put_is_idempotent_and_the_id_is_the_sha256_of_the_file(tmp_path: Path) -> None:
    store = TicketStore(tmp_path / "store")
    first = store.put(random_masks(0), META, command="test put")
    path = store.object_path(first)
    stat = path.stat()
    second = store.put(random_masks(0), META, command="test put")
    assert first == second == ticket_id(path.read_bytes())
    assert path.stat().st_ino == stat.st_ino and path.stat().st_mtime_ns == stat.st_mtime_ns  # not rewritten
    assert [p.name for p in store.objects_dir.iterdir()] == [f"{first}.safetensors"]
    log = [json.loads(line) for line in store.log_path.read_text().splitlines()]
    assert [entry["new"] for entry in log] == [True, False]
    assert {"time", "host", "user", "command", "id"} <= set(log[0])
    assert log[0]["command"] == "test put" and log[0]["id"] == first


def test_load_returns_the_stored_masks(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    masks = random_masks(3)
    ticket_id_ = store.put(masks, META)
    ticket = store.load(ticket_id_, expect_fingerprint=masks.fingerprint, expect_scope=DEFAULT_SCOPE)
    assert ticket.masks == masks and ticket.id == ticket_id_
    assert ticket.source == str(store.object_path(ticket_id_))


def test_a_flipped_byte_fails_the_hash_check_naming_the_file(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    found = store.put(random_masks(0), META)
    path = store.object_path(found)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one mask bit: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(TicketError) as err:
        store.load(found)
    message = str(err.value)
    assert message.startswith(f"{path}: hash check failed: content sha256 {ticket_id(bytes(data))[:12]}")
    assert f"!= id {found[:12]}" in message
    assert "file corrupted or edited" in message


def test_a_truncated_object_fails_the_hash_check_and_says_it_is_truncated(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    found = store.put(random_masks(0), META)
    path = store.object_path(found)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TicketError, match=rf"^{path}: hash check failed: .*truncated/unreadable safetensors"):
        store.load(found)


def test_a_ticket_of_another_model_fails_the_fingerprint_check(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    found = store.put(random_masks(0), META)
    other = MaskSet.dense({"uniter.encoder.layer.0.attention.self.query.weight": (32, 32)}).fingerprint
    with pytest.raises(TicketError) as err:
        store.load(found, expect_fingerprint=other, expect_scope=DEFAULT_SCOPE, model_name="uniter-base")
    message = str(err.value)
    assert message.startswith(f"{store.object_path(found)}: fingerprint check failed")
    assert f"does not match model uniter-base ({other[:12]}" in message
    assert "was it cut from another model or scope?" in message


def test_a_ticket_of_another_scope_fails_the_scope_check(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    masks = random_masks(0)
    found = store.put(masks, META)
    with pytest.raises(TicketError, match=rf"^{store.object_path(found)}: scope check failed: scope differs"):
        store.load(found, expect_fingerprint=masks.fingerprint, expect_scope=(r".*\.weight",))


def test_a_run_without_a_scope_takes_the_tickets_own_and_checks_the_fingerprint_under_it(
    tmp_path: Path,
) -> None:
    """sparsity.scope empty: a ticket cut with `--scope` (here: no pooler) trains; the model's
    fingerprint is asked for under the ticket's scope, and a model of other shapes is still refused."""
    from lottery.sparsity.scope import fingerprint

    no_pooler = (r".*encoder\.layer\.\d+\..*\.weight",)
    shapes = {n: s for n, s in SHAPES.items() if "pooler" not in n}
    masks = MaskSet(random_masks(0, shapes).masks, no_pooler)
    store = TicketStore(tmp_path)
    found = store.put(masks, META)
    asked: list[tuple[str, ...]] = []

    def model_fingerprint(scope: tuple[str, ...]) -> str:
        asked.append(scope)
        return fingerprint(shapes.items())

    assert store.load(found, expect_fingerprint=model_fingerprint, expect_scope=None).masks == masks
    assert asked == [no_pooler]
    with pytest.raises(TicketError, match="scope check failed.*sparsity.scope"):
        store.load(found, expect_fingerprint=model_fingerprint, expect_scope=DEFAULT_SCOPE)
    with pytest.raises(TicketError, match="fingerprint check failed"):
        store.load(
            found, expect_fingerprint=lambda scope: fingerprint([("other", (2, 2))]), expect_scope=None
        )


def test_a_write_that_fails_midway_leaves_no_object_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    store = TicketStore(tmp_path)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.put(random_masks(0), META)
    assert list(store.objects_dir.glob("*")) == []
    assert list(store.tmp_dir.glob("*")) == []


def test_a_failed_alias_update_keeps_the_old_target(tmp_path: Path, monkeypatch) -> None:
    store = TicketStore(tmp_path)
    old = store.put(random_masks(0), META, alias="tiny/s60")
    new = store.put(random_masks(1), META)

    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.alias("tiny/s60", new)
    monkeypatch.undo()
    assert store.resolve("tiny/s60") == old
    assert sorted(store.aliases()) == ["tiny/s60"]
    assert (store.refs_dir / "tiny" / "s60").read_text() == f"{old}\n"


# A writer killed with SIGKILL half-way through writing the object, or the alias after the object: the
# child writes half of the chosen write, says so, and waits to be killed.
_KILLED_WRITER = """
import os, sys, time
import torch
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketMeta, TicketStore

root, scenario = sys.argv[1], sys.argv[2]
real_write = os.write

def write(fd, data):
    if (len(data) >= 100) == (scenario == "object"):  # object data is large, an alias file is 65 bytes
        real_write(fd, bytes(data[: len(data) // 2]))
        print("half written", flush=True)
        time.sleep(600)
    return real_write(fd, data)

os.write = write
masks = MaskSet({"uniter.pooler.dense.weight": torch.arange(2000 * 1000).reshape(2000, 1000) % 3 == 0})
meta = TicketMeta(family="uniter", model="big", method="magnitude", code_version="0.1.0")
TicketStore(root).put(masks, meta, alias="tiny/s60")
"""


@pytest.mark.parametrize("killed_during", ["object", "ref"])
def test_a_writer_killed_mid_write_never_shows_a_partial_object_or_alias(
    tmp_path: Path, killed_during: str
) -> None:
    store = TicketStore(tmp_path / "store")
    old = store.put(random_masks(0), META, alias="tiny/s60")
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(store.root), killed_during],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line == "half written\n", child.stderr.read()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()

    for path in store.objects_dir.iterdir():  # every visible object is complete
        assert ticket_id(path.read_bytes()) == path.name.removesuffix(".safetensors")
    assert len(store.ids()) == (1 if killed_during == "object" else 2)
    assert (store.refs_dir / "tiny" / "s60").read_text() == f"{old}\n"
    assert store.load("tiny/s60").masks == random_masks(0)
    leftovers = list(store.tmp_dir.iterdir())  # the partial file, where no reader looks
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0


def test_resolve_accepts_an_alias_a_full_id_and_a_unique_prefix(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    found = store.put(random_masks(0), META, alias="uniter-mini/pretrain/s60")
    assert store.resolve("uniter-mini/pretrain/s60") == found
    assert store.resolve(found) == found
    assert store.resolve(found[:6]) == found
    with pytest.raises(TicketError, match="no ticket"):
        store.resolve(found[:3])  # shorter than 4 digits: not taken as a prefix


def test_an_ambiguous_prefix_lists_the_candidates(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    store.objects_dir.mkdir()
    for tail in ("0" * 59, "1" * 59):
        (store.objects_dir / f"abcde{tail}.safetensors").write_bytes(b"")
    with pytest.raises(
        TicketError, match=r"prefix 'abcd' is ambiguous, it matches 2 tickets \(abcde00000000000, abcde11111"
    ):
        store.resolve("abcd")


def test_an_unknown_ref_suggests_close_aliases(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    store.put(random_masks(0), META, alias="uniter-mini/pretrain/s60")
    with pytest.raises(
        TicketError, match=r"no ticket 'uniter-mini/pretrain/s06'.*close matches: uniter-mini/pretrain/s60"
    ):
        store.resolve("uniter-mini/pretrain/s06")


@pytest.mark.parametrize(
    "name", ["../escape", "/etc/passwd", "a//b", "a/../b", "", "deadbeef", "a b", "a/.hidden"]
)
def test_alias_names_that_could_escape_refs_or_look_like_ids_are_refused(tmp_path: Path, name: str) -> None:
    store = TicketStore(tmp_path)
    found = store.put(random_masks(0), META)
    with pytest.raises(TicketError, match="alias"):
        store.alias(name, found)
    assert not store.refs_dir.exists() or list(store.refs_dir.rglob("*")) == []


def test_an_alias_can_be_moved_and_cannot_be_both_a_name_and_a_folder(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    first = store.put(random_masks(0), META, alias="tiny/s60")
    second = store.put(random_masks(1), META)
    assert store.alias("tiny/s60", second[:8]) == second
    assert store.resolve("tiny/s60") == second != first
    with pytest.raises(TicketError, match="'tiny/s60' is already an alias, so it cannot also be a folder"):
        store.alias("tiny/s60/more", first)
    with pytest.raises(TicketError, match="is a folder of aliases"):
        store.alias("tiny", first)


def test_list_shows_every_object_with_its_aliases_and_metadata(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    first = store.put(random_masks(0), META, alias="tiny/s60")
    store.alias("tiny/best", first)
    second = store.put(random_masks(1), TicketMeta(family="uniter", model="tiny", method="random"))
    entries = {entry.id: entry for entry in store.list()}
    assert set(entries) == {first, second}
    assert entries[first].aliases == ("tiny/best", "tiny/s60")
    assert entries[first].meta["method"] == "magnitude" and entries[second].meta["method"] == "random"
    assert entries[second].aliases == ()
    assert entries[first].size == store.object_path(first).stat().st_size


def test_ticket_files_hold_nothing_about_time_or_host(tmp_path: Path) -> None:
    import socket

    store = TicketStore(tmp_path)
    found = store.put(random_masks(0), META)
    assert socket.gethostname().encode() not in store.object_path(found).read_bytes()
    assert socket.gethostname() in store.log_path.read_text()


# --- loading for a distributed job -------------------------------------------------------------


def test_load_broadcast_without_torch_distributed_checks_and_returns_the_ticket(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    masks = random_masks(0)
    store.put(masks, META, alias="tiny/s60")
    ticket = load_broadcast(
        tmp_path, "tiny/s60", expect_fingerprint=masks.fingerprint, expect_scope=DEFAULT_SCOPE
    )
    assert ticket.masks == masks
    with pytest.raises(TicketError, match="fingerprint check failed"):
        load_broadcast(tmp_path, "tiny/s60", expect_fingerprint="0" * 64, expect_scope=None)


class _Recorder:
    """Stands in for lottery.dist: records what rank 0 broadcasts, then replays it to a 'rank 1'."""

    def __init__(self, main: bool, sent: list[tuple[str, object]] | None = None) -> None:
        self.main = main
        self.sent = [] if sent is None else sent
        self.calls: list[str] = []

    def is_main(self) -> bool:
        return self.main

    def broadcast_object(self, obj: object) -> object:
        return self._collective("object", obj)

    def broadcast_bytes(self, payload: bytes | None) -> bytes:
        return self._collective("bytes", payload)

    def _collective(self, kind: str, value: object):
        if self.main:
            self.sent.append((kind, value))
            self.calls.append(kind)
            return value
        expected_kind, value = self.sent[len(self.calls)]
        assert kind == expected_kind, (
            f"rank 1 ran broadcast_{kind} where rank 0 ran broadcast_{expected_kind}"
        )
        self.calls.append(kind)
        return value


def _as_rank(monkeypatch, fake: _Recorder) -> None:
    for name in ("is_main", "broadcast_object", "broadcast_bytes"):
        monkeypatch.setattr(tickets_distributed.dist, name, getattr(fake, name))


def test_load_broadcast_gives_other_ranks_the_bytes_rank_0_verified(tmp_path: Path, monkeypatch) -> None:
    masks = random_masks(0)
    TicketStore(tmp_path).put(masks, META, alias="tiny/s60")
    rank0 = _Recorder(main=True)
    _as_rank(monkeypatch, rank0)
    load_broadcast(tmp_path, "tiny/s60", expect_fingerprint=masks.fingerprint, expect_scope=DEFAULT_SCOPE)
    rank1 = _Recorder(main=False, sent=rank0.sent)
    _as_rank(monkeypatch, rank1)
    # rank 1 never touches the store: an empty root would fail if it did
    ticket = load_broadcast(tmp_path / "absent", "tiny/s60", expect_fingerprint=None, expect_scope=None)
    assert rank1.calls == rank0.calls == ["object", "bytes"]
    assert ticket.masks == masks
    monkeypatch.undo()
    assert dist.world_size() == 1


def test_load_broadcast_raises_rank_0s_error_on_every_rank(tmp_path: Path, monkeypatch) -> None:
    store = TicketStore(tmp_path)
    found = store.put(random_masks(0), META)
    store.object_path(found).write_bytes(b"garbage")
    rank0 = _Recorder(main=True)
    _as_rank(monkeypatch, rank0)
    with pytest.raises(TicketError, match="hash check failed") as on_rank0:
        load_broadcast(tmp_path, found, expect_fingerprint=None, expect_scope=None)
    rank1 = _Recorder(main=False, sent=rank0.sent)
    _as_rank(monkeypatch, rank1)
    with pytest.raises(TicketError) as on_rank1:
        load_broadcast(tmp_path, found, expect_fingerprint=None, expect_scope=None)
    assert str(on_rank1.value) == str(on_rank0.value)
    assert rank1.calls == rank0.calls == ["object"]  # no rank waits for bytes that never come
