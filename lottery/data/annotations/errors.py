"""The one error type of annotation parsing, and the checked reads and lookups that raise it.

Benchmark annotation files are large, hand-assembled and come in many versions, so a parser must fail
at the record that is wrong and say where it is: `path:LINE: problem` for JSON Lines (LINE 1-based),
`path: RECORD: problem` for a JSON file, where RECORD is a JSON-path-like name such as
`questions[3]`, `images[2].sentences[0]` or `['201307251']`. Parsers get every field through `require` and build every example
through `make_example`, so no bare KeyError, TypeError or TaskExample ValueError escapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lottery.data.examples import TaskExample


class AnnotationError(ValueError):
    """An annotation file does not follow its benchmark's format; the message names file and record."""


@dataclass(frozen=True)
class At:
    """Where a record sits: its file, its 1-based line (JSON Lines only) and its name within the line or file."""

    path: Path
    line: int | None = None
    record: str | None = None

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        return where if self.record is None else f"{where}: {self.record}"

    def inner(self, name: str) -> At:
        """A record nested in this one: `images` -> `images[2]` by "[2]", -> `images.sentences` by "sentences"."""
        if self.record is None:
            return At(self.path, self.line, name)
        return At(self.path, self.line, self.record + (name if name.startswith("[") else f".{name}"))

    def error(self, problem: str) -> AnnotationError:
        return AnnotationError(f"{self}: {problem}")


def read_json(path: Path) -> Any:
    """The parsed content of a JSON file; invalid JSON is reported with its line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_jsonl(path: Path) -> Iterator[tuple[At, Mapping[str, Any]]]:
    """Each non-blank line's JSON object with its location; a line that is not one is an error."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            at = At(path, line=number)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise at.error(f"not UTF-8 text ({e.reason} at byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise at.error(f"invalid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(record, dict):
                raise at.error(f"expected a JSON object, got {_kind(record)}")
            yield at, record


def json_records(content: Any, path: Path, key: str | None) -> list[tuple[At, Mapping[str, Any]]]:
    """The objects of a list in `content`, parsed from `path`, each with its location: the top-level list
    when `key` is None (records `[i]`), else the list under the top-level object's `key` (`key[i]`)."""
    if key is not None:
        content = require(require_object(content, At(path), "the file"), key, list, At(path))
    elif not isinstance(content, list):
        raise At(path).error(f"the file must be a JSON list, got {_kind(content)}")
    records = []
    for i, item in enumerate(content):
        at = At(path, record=f"{key or ''}[{i}]")
        records.append((at, require_object(item, at, "a record")))
    return records


def require(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...], at: At) -> Any:
    """`record[key]`, checked to be of `kind`; bool is not accepted as int (JSON true is no label)."""
    if key not in record:
        raise at.error(f"missing key {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise at.error(f"{key!r} must be {_names(kind)}, got {_kind(value)} {_preview(value)}")
    return value


def require_text(record: Mapping[str, Any], key: str, at: At) -> str:
    """`record[key]` as a non-blank string, stripped: an empty question or caption is a broken record."""
    text = require(record, key, str, at).strip()
    if not text:
        raise at.error(f"{key!r} is empty")
    return text


def require_object(value: Any, at: At, what: str) -> Mapping[str, Any]:
    """`value` if it is a JSON object, for records reached by index or key rather than by `require`."""
    if not isinstance(value, dict):
        raise at.error(f"{what} must be a JSON object, got {_kind(value)}")
    return value


def require_split(split: str | None, known: Sequence[str]) -> None:
    """Reject a split filter that no file of the benchmark can contain, rather than return nothing."""
    if split is not None and split not in known:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(known)}")


def claim_uid(seen: dict[str, At], uid: str, at: At) -> None:
    """Record `uid` as taken by `at`; a uid seen before means the file repeats a record."""
    if uid in seen:
        raise at.error(f"duplicate uid {uid!r}, first seen at {seen[uid]}")
    seen[uid] = at


def make_example(
    at: At, task: str, uid: str, images: tuple[str, ...], text: str, fields: Mapping[str, Any]
) -> TaskExample:
    """A TaskExample whose own checks (e.g. no '.' in image keys) report the record they came from."""
    try:
        return TaskExample(task, uid, images, text, fields)
    except ValueError as e:
        raise at.error(str(e)) from None


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


_JSON_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(_JSON_NAMES.get(k, k.__name__) for k in _kinds(kind))


def _kind(value: Any) -> str:
    return "null" if value is None else _JSON_NAMES.get(type(value), type(value).__name__)


def _preview(value: Any) -> str:
    text = json.dumps(value)
    return f"({text[:40]}...)" if len(text) > 43 else f"({text})"
