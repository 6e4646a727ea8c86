"""The ticket store: a directory of content-addressed ticket files, human aliases and a provenance log.

Layout (a local disk or a shared file system)::

    objects/<sha256 of the file>.safetensors   complete ticket files, never rewritten
    refs/<alias path, e.g. uniter-mini/pretrain/s60>   one line: the id the alias points to
    tmp/                                       files being written; leftovers of killed writers are safe to delete
    log.jsonl                                  one JSON line per object or alias written: when, host, user, command
    alias.lock                                 held (POSIX lock, works on NFS) while an alias is read and moved

Every file is written to `tmp/` (same file system), fsynced and moved into place with `os.replace`
(lottery.files.write_bytes_atomic), so a reader sees either the old file or the complete new one,
even when the writer is killed: `objects/` and `refs/` only ever hold complete files. Time and
host go to the log only, never into a ticket, so an object's id depends on its masks and metadata alone.

Several jobs may publish into one shared store at once: see `lottery.tickets.alias_lock`.
"""

from __future__ import annotations

import difflib
import getpass
import hashlib
import json
import os
import re
import shlex
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import safetensors

from lottery.files import write_bytes_atomic
from lottery.sparsity.maskset import MaskSet
from lottery.tickets.alias_lock import ANY, AliasTaken, alias_lock, last_writer
from lottery.tickets.format import (
    Ticket,
    TicketError,
    TicketMeta,
    read_header,
    read_ticket,
    ticket_bytes,
    ticket_id,
)
from lottery.tickets.model_checks import check_layout as check_layout
from lottery.tickets.model_checks import check_model as check_model

STORE_ENV = "LOTTERY_TICKET_STORE"
MIN_PREFIX = 4  # shortest id prefix `resolve` accepts, as with git
_ID = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_ALIAS_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
_CHUNK = 1 << 20
_MAX_HEADER = 100_000_000  # safetensors' own limit
BEFORE_RENAME = "store.before_rename"  # the fault point where tests kill a writer: temp complete, not renamed
ALIAS_BEFORE_RENAME = "store.alias_before_rename"  # the same for an alias update


def default_root() -> Path:
    """`$LOTTERY_TICKET_STORE`, else `tickets/` in the working directory."""
    return Path(os.environ.get(STORE_ENV) or "tickets")


def check_alias(name: str) -> str:
    """`name` if it is a valid alias: a relative path of [A-Za-z0-9._+=-] parts, not all hex digits.

    Refusing `..`, absolute paths and empty parts keeps every alias inside `refs/`; refusing pure hex
    keeps an alias from being mistaken for an id prefix.
    """
    parts = name.split("/")
    if not name or any(not _ALIAS_PART.fullmatch(part) for part in parts):
        raise TicketError(
            f"alias {name!r}: must be a relative path like uniter-mini/pretrain/s60 whose parts start with a "
            "letter or digit and use only letters, digits and . _ + = - (no '..', no leading '/')"
        )
    if _HEX.fullmatch(name):
        raise TicketError(f"alias {name!r}: looks like a ticket id prefix; add a non-hex character")
    return name


@dataclass(frozen=True)
class StoreEntry:
    """One object of the store, as `TicketStore.list` shows it."""

    id: str
    aliases: tuple[str, ...]
    meta: Mapping[str, str]  # the ticket's string metadata; empty when `problem` is set
    size: int  # file size in bytes
    problem: str = ""  # why the header could not be read


class TicketStore:
    """A ticket store rooted at `root` (created on first write). Safe for concurrent writers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def refs_dir(self) -> Path:
        return self.root / "refs"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def log_path(self) -> Path:
        return self.root / "log.jsonl"

    def object_path(self, ticket_id: str) -> Path:
        return self.objects_dir / f"{ticket_id}.safetensors"

    def check_root(self) -> None:
        """Refuse a root that is not a ticket store: missing, not a directory, or one of other files.

        The store is created on first write, so writers need no check; a reader that would answer
        "no tickets" (`lottery ticket list`) calls this first, so that a mistyped `--store` is not
        taken for an empty store. An empty directory is an empty store.
        """
        fix = f"give the store's directory with --store or ${STORE_ENV}"
        if not self.root.exists():
            raise TicketError(f"{self.root}: no ticket store there, the directory does not exist; {fix}")
        if not self.root.is_dir():
            raise TicketError(f"{self.root}: not a ticket store, it is a file, not a directory; {fix}")
        layout = (self.objects_dir, self.refs_dir, self.tmp_dir, self.log_path)
        if any(self.root.iterdir()) and not any(path.exists() for path in layout):
            raise TicketError(
                f"{self.root}: not a ticket store, it holds none of objects/, refs/, tmp/, log.jsonl; {fix}"
            )

    def put(
        self, masks: MaskSet, meta: TicketMeta, alias: str | None = None, *, command: str | None = None
    ) -> str:
        """Store a ticket and return its id; point `alias` at it when given.

        Idempotent: the same masks and metadata give the same bytes and id, and an intact object
        already stored is not rewritten (a damaged one is replaced). `command` (default: this
        process's argv) goes to the log.
        """
        if alias is not None:
            check_alias(alias)
        data = ticket_bytes(masks, meta)
        new_id = ticket_id(data)
        path = self.object_path(new_id)
        created = not (path.is_file() and _file_sha256(path) == new_id)
        if created:
            write_bytes_atomic(path, data, tmp_dir=self.tmp_dir, fault=BEFORE_RENAME)
        self._log(
            {
                "event": "put",
                "id": new_id,
                "new": created,
                "model": meta.model,
                "method": meta.method,
                "sparsity": round(masks.sparsity, 6),
            },
            command,
        )
        if alias is not None:
            self.alias(alias, new_id, command=command)
        return new_id

    def alias(self, name: str, ref: str, *, command: str | None = None, expect: object = ANY) -> str:
        """Point alias `name` at the ticket `ref` (id, prefix or alias), atomically; returns the id.

        `expect`: the id the alias pointed at when the caller's job began (None: no such alias). If
        another writer has moved it since (to another ticket than ours), it is left to them and
        `AliasTaken` says so.
        """
        check_alias(name)
        target = self.resolve(ref)
        path = self.refs_dir / name
        if path.is_dir():
            raise TicketError(f"alias {name!r}: {path} is a folder of aliases; choose another name")
        for parent in path.relative_to(self.refs_dir).parents:
            if (self.refs_dir / parent).is_file():
                raise TicketError(
                    f"alias {name!r}: {parent.as_posix()!r} is already an alias, so it cannot also be a folder"
                )
        with alias_lock(self.root):
            current = self.current(name)
            if expect is not ANY and current not in (expect, target):
                raise AliasTaken(name, current or "", last_writer(self.log_path, name), target)
            write_bytes_atomic(path, f"{target}\n".encode(), tmp_dir=self.tmp_dir, fault=ALIAS_BEFORE_RENAME)
            self._log({"event": "alias", "alias": name, "id": target, "previous": current}, command)
        return target

    def current(self, name: str) -> str | None:
        """The id alias `name` holds now, None if there is no such alias (not checked: `resolve` does)."""
        path = self.refs_dir / name
        return path.read_text().strip() if path.is_file() else None

    def aliases(self) -> dict[str, str]:
        """alias -> the text of its ref file (an id), sorted by alias."""
        if not self.refs_dir.is_dir():
            return {}
        return {
            path.relative_to(self.refs_dir).as_posix(): path.read_text().strip()
            for path in sorted(self.refs_dir.rglob("*"))
            if path.is_file()
        }

    def ids(self) -> list[str]:
        """The ids of the stored objects, sorted."""
        if not self.objects_dir.is_dir():
            return []
        return sorted(
            p.name.removesuffix(".safetensors")
            for p in self.objects_dir.glob("*.safetensors")
            if _ID.fullmatch(p.name.removesuffix(".safetensors"))
        )

    def resolve(self, ref: str) -> str:
        """The id named by `ref`: a full id, an alias, or a unique id prefix of at least 4 hex digits."""
        ref = ref.strip()
        if _ID.fullmatch(ref):
            return self._existing(ref, f"id {ref[:12]}…")
        alias_path = self.refs_dir / ref
        if _is_alias_syntax(ref) and alias_path.is_file():
            target = alias_path.read_text().strip()
            if not _ID.fullmatch(target):
                raise TicketError(
                    f"{alias_path}: alias {ref!r} holds {target[:80]!r}, not a ticket id; re-set it"
                )
            return self._existing(target, f"alias {ref!r} -> {target[:12]}…")
        ids = self.ids()
        if len(ref) >= MIN_PREFIX and _HEX.fullmatch(ref):
            matches = [i for i in ids if i.startswith(ref.lower())]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                shown = ", ".join(m[:16] for m in matches[:10])
                raise TicketError(
                    f"{self.root}: id prefix {ref!r} is ambiguous, it matches {len(matches)} tickets ({shown}); "
                    "give more digits"
                )
        names = list(self.aliases()) + [i[:12] for i in ids]
        close = difflib.get_close_matches(ref, names, n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else "`lottery ticket list` shows what it holds"
        raise TicketError(f"{self.root}: no ticket {ref!r} (not an id, unique id prefix or alias); {hint}")

    def header(self, ref: str) -> tuple[Path, dict[str, str]]:
        """The object `ref` names and its header's metadata, read without the masks (a few KB, so every
        rank of a job may check a ticket's layout before the one verified read that is broadcast)."""
        path = self.object_path(self.resolve(ref))
        try:
            return path, _read_file_header(path)
        except OSError as err:
            raise TicketError(f"{path}: unreadable: {err}") from None

    def read_verified(self, ref: str) -> tuple[str, Path, bytes]:
        """(id, path, bytes) of the ticket `ref`, after checking that the bytes hash to the id."""
        found = self.resolve(ref)
        path = self.object_path(found)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise TicketError(f"{path}: cannot read the ticket: {err.strerror}") from None
        actual = ticket_id(data)
        if actual != found:
            raise TicketError(
                f"{path}: hash check failed: content sha256 {actual[:12]}… != id {found[:12]}… "
                f"({_damage(data)}); restore the file from a copy or cut the ticket again"
            )
        return found, path, data

    def load(
        self,
        ref: str,
        *,
        expect_fingerprint: str | Callable[[tuple[str, ...]], str] | None = None,
        expect_scope: Sequence[str] | None = None,
        model_name: str | None = None,
    ) -> Ticket:
        """The ticket `ref` after the hash, format and (when given) scope and fingerprint checks.

        `model_name` only names the model in a fingerprint error.
        """
        _, path, data = self.read_verified(ref)
        ticket = read_ticket(data, str(path))
        check_model(ticket, fingerprint=expect_fingerprint, scope=expect_scope, model_name=model_name)
        return ticket

    def list(self) -> list[StoreEntry]:
        """Every object with its aliases and metadata, read from the file headers only."""
        by_id: dict[str, list[str]] = {}
        for name, target in self.aliases().items():
            by_id.setdefault(target, []).append(name)
        entries = []
        for found in self.ids():
            path = self.object_path(found)
            size = path.stat().st_size
            try:
                meta, problem = _read_file_header(path), ""
            except TicketError as err:
                meta, problem = {}, str(err)
            entries.append(StoreEntry(found, tuple(by_id.get(found, ())), meta, size, problem))
        return entries

    def _existing(self, found: str, what: str) -> str:
        if not self.object_path(found).is_file():
            raise TicketError(f"{self.object_path(found)}: {what}: no such object in the store {self.root}")
        return found

    def _log(self, event: dict[str, object], command: str | None) -> None:
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "user": _user(),
            "pid": os.getpid(),
            "command": command if command is not None else shlex.join(sys.argv),
            **event,
        }
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        self.root.mkdir(parents=True, exist_ok=True)
        # one write to an O_APPEND file: concurrent writers on a local disk do not interleave lines
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _is_alias_syntax(name: str) -> bool:
    try:
        check_alias(name)
    except TicketError:
        return False
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return str(os.getuid())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _damage(data: bytes) -> str:
    """What is wrong with bytes that fail the hash check, for the message."""
    try:
        safetensors.deserialize(data)
    except Exception as err:  # any parse failure is the diagnosis
        return f"file truncated/unreadable safetensors: {err}"
    return "file corrupted or edited"


def _read_file_header(path: Path) -> dict[str, str]:
    with path.open("rb") as handle:
        start = handle.read(8)
        length = int.from_bytes(start, "little") if len(start) == 8 else 0
        if length > _MAX_HEADER:
            raise TicketError(
                f"{path}: truncated/unreadable safetensors: header length {length} is implausible"
            )
        return read_header(start + handle.read(length), str(path))
