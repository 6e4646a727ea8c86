"""The ticket file: one safetensors file holding a bit-packed MaskSet and string metadata.

Per prunable parameter there is a uint8 tensor named exactly after the parameter: its mask packed by
`MaskSet.packed` (numpy.packbits, big-endian bit order, 1 = kept), so any safetensors + numpy user can
read a ticket without this package. The metadata records everything needed to unpack it without a
model (scope, ordered shapes) and to tell where it came from (family, model, method, tasks, round,
config digest, code version).

A ticket's id is the sha256 of its bytes, so the same masks and metadata must always give the same
bytes. The safetensors library writes its metadata map in hash order (a different order in every
process), so the file is assembled here: compact JSON with sorted keys, tensors in name order, the
header padded with spaces to 8 bytes as safetensors itself does. Nothing time- or host-dependent goes
in; that belongs in the store's log. Reading goes through `safetensors.deserialize`, the reference
parser, which rejects truncated or inconsistent files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import safetensors

from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import fingerprint

FORMAT_NAME = "vl-lottery-ticket"
FORMAT_VERSION = 1
_HEADER_LENGTH_BYTES = 8


class TicketError(Exception):
    """A ticket that cannot be used: unreadable, corrupted, or cut for another model or scope.

    The message names the file (or store) and the check that failed.
    """


def code_version() -> str:
    """The installed vl-lottery version, recorded in every ticket."""
    try:
        return importlib.metadata.version("vl-lottery")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class TicketMeta:
    """Where a ticket came from. The layout (scope, shapes, fingerprint, sparsity) comes from the MaskSet."""

    family: str  # model family, e.g. "uniter"
    model: str  # the model's config name, e.g. "uniter-mini"
    method: str  # pruning criterion, e.g. "magnitude"
    tasks: tuple[str, ...] = ()  # the task(s) whose training produced the mask; () for a one-shot cut
    imp_round: int = 0  # IMP round; 0 for a one-shot cut
    config_digest: str = ""  # sha256 of the run config (or of the cut's arguments)
    code_version: str = field(default_factory=code_version)

    def __post_init__(self) -> None:
        for name in ("family", "model", "method"):
            if not getattr(self, name):
                raise ValueError(f"TicketMeta.{name} must be a non-empty string")
        if isinstance(self.tasks, str):
            raise TypeError(f"TicketMeta.tasks must be a tuple of task names, got the string {self.tasks!r}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.imp_round < 0:
            raise ValueError(f"TicketMeta.imp_round must be >= 0, got {self.imp_round}")


@dataclass(frozen=True)
class Ticket:
    """A parsed ticket file: the masks, their provenance, the file's id and where it was read from."""

    masks: MaskSet
    meta: TicketMeta
    id: str  # sha256 (hex) of the file bytes
    source: str  # file path or other origin, for messages

    @property
    def sparsity(self) -> float:
        return self.masks.sparsity


def ticket_metadata(masks: MaskSet, meta: TicketMeta) -> dict[str, str]:
    """The safetensors string metadata of a ticket file."""
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "family": meta.family,
        "model": meta.model,
        "fingerprint": masks.fingerprint,
        "scope": json.dumps(list(masks.scope), separators=(",", ":")),
        # a JSON object in scope order: the order is part of the fingerprint
        "shapes": json.dumps({name: list(shape) for name, shape in masks.shapes()}, separators=(",", ":")),
        "sparsity": repr(float(masks.sparsity)),
        "method": meta.method,
        "tasks": json.dumps(list(meta.tasks), separators=(",", ":")),
        "imp_round": str(meta.imp_round),
        "config_digest": meta.config_digest,
        "code_version": meta.code_version,
    }


def ticket_bytes(masks: MaskSet, meta: TicketMeta) -> bytes:
    """The ticket file for `masks`: about one bit per prunable weight plus a header of a few KB.

    Deterministic: the same masks and metadata give byte-identical output in any process.
    """
    if not masks.masks:
        raise ValueError("cannot write a ticket for an empty MaskSet")
    if masks.fingerprint != fingerprint(masks.shapes()):
        raise ValueError(
            f"MaskSet fingerprint {masks.fingerprint[:12]} is not the fingerprint of its own names and "
            f"shapes ({fingerprint(masks.shapes())[:12]}); build it in the model's prunable order"
        )
    packed = masks.packed()
    header: dict[str, Any] = {"__metadata__": ticket_metadata(masks, meta)}
    offset = 0
    for name in sorted(packed):
        size = int(packed[name].size)
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    body = b"".join(packed[name].tobytes() for name in sorted(packed))
    return len(text).to_bytes(_HEADER_LENGTH_BYTES, "little") + text + body


def ticket_id(data: bytes) -> str:
    """A ticket's id: the sha256 (hex) of its file bytes."""
    return hashlib.sha256(data).hexdigest()


def read_header(data: bytes, source: str) -> dict[str, str]:
    """The string metadata of a ticket from the start of its file, without reading the masks.

    `data` may be just the file's first bytes (the header length plus the header), which is how the
    store lists tickets cheaply; the data section is not checked here.
    """
    if len(data) < _HEADER_LENGTH_BYTES:
        raise TicketError(f"{source}: truncated/unreadable safetensors: {len(data)} bytes, no header")
    length = int.from_bytes(data[:_HEADER_LENGTH_BYTES], "little")
    raw = data[_HEADER_LENGTH_BYTES : _HEADER_LENGTH_BYTES + length]
    if len(raw) < length:
        raise TicketError(
            f"{source}: truncated/unreadable safetensors: header of {length} bytes is cut short"
        )
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TicketError(f"{source}: truncated/unreadable safetensors: header is not JSON ({err})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise TicketError(
            f"{source}: not a ticket: the safetensors metadata lacks format={FORMAT_NAME!r} "
            "(a model checkpoint or another kind of file?)"
        )
    version = metadata.get("format_version", "")
    if version != str(FORMAT_VERSION):
        raise TicketError(
            f"{source}: ticket format version {version!r}, this code reads version {FORMAT_VERSION}; "
            "use the vl-lottery version that wrote it (metadata code_version="
            f"{metadata.get('code_version', '?')})"
        )
    return metadata


def _meta_from_header(metadata: Mapping[str, str], source: str) -> TicketMeta:
    try:
        return TicketMeta(
            family=metadata["family"],
            model=metadata["model"],
            method=metadata["method"],
            tasks=tuple(json.loads(metadata["tasks"])),
            imp_round=int(metadata["imp_round"]),
            config_digest=metadata["config_digest"],
            code_version=metadata["code_version"],
        )
    except (KeyError, ValueError, TypeError) as err:
        raise TicketError(f"{source}: metadata check failed: missing or malformed field ({err!r})") from None


def _layout(metadata: Mapping[str, str], source: str) -> tuple[dict[str, list[int]], tuple[str, ...]]:
    try:
        shapes = json.loads(metadata["shapes"])
        scope = tuple(json.loads(metadata["scope"]))
    except (KeyError, ValueError, TypeError) as err:
        raise TicketError(
            f"{source}: metadata check failed: shapes/scope missing or malformed ({err!r})"
        ) from None
    if not isinstance(shapes, dict) or not all(isinstance(s, list) for s in shapes.values()):
        raise TicketError(
            f"{source}: metadata check failed: shapes is not a JSON object of name -> shape list"
        )
    return shapes, scope


def header_layout(metadata: Mapping[str, str], source: str) -> tuple[tuple[str, ...], str, TicketMeta]:
    """A ticket header's scope, fingerprint and provenance, parsed as `read_ticket` parses them, for a
    check that must not read the masks (a job's preflight, on every rank)."""
    _, scope = _layout(metadata, source)
    meta = _meta_from_header(metadata, source)
    fingerprint = metadata.get("fingerprint")
    if not fingerprint:
        raise TicketError(f"{source}: metadata check failed: fingerprint missing")
    return scope, fingerprint, meta


def read_ticket(data: bytes, source: str) -> Ticket:
    """Parse a ticket file's bytes; `source` names it in every error.

    Checks, in order: readable safetensors, ticket format and version, the masks' layout against the
    recorded shapes, and the recorded fingerprint against those names and shapes. It does not check
    the id (the store does) nor the model (see `store.check_model`).
    """
    try:
        tensors = safetensors.deserialize(data)
    except Exception as err:  # SafetensorError, and whatever a garbage header raises
        raise TicketError(f"{source}: truncated/unreadable safetensors: {err}") from None
    metadata = read_header(data, source)
    meta = _meta_from_header(metadata, source)
    shapes, scope = _layout(metadata, source)

    packed: dict[str, np.ndarray] = {}
    for name, info in tensors:
        if info["dtype"] != "U8":
            raise TicketError(f"{source}: layout check failed: tensor {name} is {info['dtype']}, expected U8")
        packed[name] = np.frombuffer(bytes(info["data"]), dtype=np.uint8)
    if set(packed) != set(shapes):
        extra, missing = sorted(set(packed) - set(shapes)), sorted(set(shapes) - set(packed))
        raise TicketError(
            f"{source}: layout check failed: tensors and recorded shapes differ "
            f"(tensors without a shape: {extra}; shapes without a tensor: {missing})"
        )
    try:
        masks = MaskSet.unpack(packed, shapes, scope)
    except (ValueError, TypeError, RuntimeError) as err:
        raise TicketError(f"{source}: layout check failed: {err}") from None
    if masks.fingerprint != metadata.get("fingerprint"):
        raise TicketError(
            f"{source}: metadata check failed: recorded fingerprint {metadata.get('fingerprint', '')[:12]} is not "
            f"that of the recorded names and shapes ({masks.fingerprint[:12]}); the metadata was edited"
        )
    return Ticket(masks=masks, meta=meta, id=ticket_id(data), source=source)


def scope_text(scope: Sequence[str]) -> str:
    """A scope as one line, for messages."""
    return json.dumps(list(scope))
