"""LXMERT's bottom-up-attention TSV (+ its caption JSONs) -> shards, one sample per captioned image.

The TSV has no header; its columns are `FIELDNAMES`, the array columns base64 of raw little-endian
numpy buffers, one image per (very long) line. It is read twice, never held: a first pass records
each line's byte offset and img_id (and checks its column count), then each sample seeks to its line
and decodes it alone, so memory stays flat however large the file. Sample order is TSV line order,
keeping only images that have a caption, so the shards are fixed slices of the input and a rerun
resumes (writer.py).

A sample's `box.npy` is `[x1/w, y1/h, x2/w, y2/h, (x2-x1)/w, (y2-y1)/h, area]`, the coordinates
clipped to [0, 1] before the width, height and area are taken from them, so the 7 values describe
one box. There is no `soft.npy`: the TSV keeps only each region's top class (`objects_id`) and its
confidence, not the detector's class distribution that MRC-kl needs.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lottery.data.convert.writer import (
    DETECTOR_CLASSES,
    ConvertError,
    Plan,
    Result,
    check_target,
    safe_key,
    write_shards,
)
from lottery.progress import progress_bar

FIELDNAMES: tuple[str, ...] = (
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
)
# per-region array columns: (dtype, values per region); features' width D is read from the data
_ARRAYS: dict[str, tuple[str, int]] = {
    "objects_id": ("<i8", 1),
    "objects_conf": ("<f4", 1),
    "attrs_id": ("<i8", 1),
    "attrs_conf": ("<f4", 1),
    "boxes": ("<f4", 4),
}
# one line holds a whole image's features (2048 floats a region, in base64): far above csv's default
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def load_captions(paths: Sequence[Path]) -> dict[str, list[str]]:
    """img_id -> captions, from LXMERT caption JSONs (lists of {"img_id", "sentf": {source: [...]}}).

    Files in the order given, entries in file order, sources in sorted order: a stable caption order,
    hence stable samples. Empty captions are dropped (the schema refuses them).
    """
    texts: dict[str, list[str]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConvertError(f"LXMERT captions {path}: not a readable JSON file ({exc})") from exc
        if not isinstance(data, list):
            raise ConvertError(f"LXMERT captions {path}: a {type(data).__name__}, expected a list of entries")
        for i, datum in enumerate(data):
            img_id = datum.get("img_id") if isinstance(datum, dict) else None
            sentf = datum.get("sentf") if isinstance(datum, dict) else None
            if not isinstance(img_id, (str, int)) or not isinstance(sentf, dict):
                raise ConvertError(f"LXMERT captions {path}, entry {i}: needs 'img_id' and a 'sentf' mapping")
            bucket = texts.setdefault(str(img_id), [])
            for source in sorted(sentf):
                sents = sentf[source]
                if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
                    raise ConvertError(
                        f"LXMERT captions {path}, entry {i} (img_id {img_id!r}): field 'sentf.{source}' "
                        "is not a list of strings"
                    )
                bucket.extend(s for s in sents if s.strip())
    return texts


def index_tsv(tsv: Path) -> list[tuple[str, int, int]]:
    """(img_id, line number, byte offset) of every non-empty line, checking each has 10 columns."""
    rows: list[tuple[str, int, int]] = []
    offset = 0
    with open(tsv, "rb") as f, progress_bar(total=tsv.stat().st_size, desc="index TSV", unit="B") as bar:
        for line_no, line in enumerate(f, start=1):
            start, offset = offset, offset + len(line)
            bar.update(len(line))
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            head = line[: line.find(b"\t")].decode("utf-8", "replace")
            columns = line.count(b"\t") + 1
            if columns != len(FIELDNAMES):
                raise ConvertError(
                    f"LXMERT TSV {tsv} line {line_no} (img_id {head!r}): {columns} columns, expected "
                    f"{len(FIELDNAMES)} ({', '.join(FIELDNAMES)})"
                )
            rows.append((head, line_no, start))
    return rows


def read_record(handle: BinaryIO, tsv: Path, line_no: int, offset: int) -> dict[str, Any]:
    """The line at `offset`, decoded: img_h, img_w, num_boxes and every array column as numpy."""
    handle.seek(offset)
    text = handle.readline().rstrip(b"\r\n").decode("utf-8", "replace")
    csv.field_size_limit(_FIELD_LIMIT)
    fields = next(csv.reader([text], delimiter="\t", quoting=csv.QUOTE_NONE))
    img_id = fields[0] if fields else ""
    where = f"LXMERT TSV {tsv} line {line_no} (img_id {img_id!r})"
    if len(fields) != len(FIELDNAMES):
        raise ConvertError(f"{where}: {len(fields)} columns, expected {len(FIELDNAMES)}")
    row = dict(zip(FIELDNAMES, fields, strict=True))
    record: dict[str, Any] = {"img_id": img_id}
    for name in ("img_h", "img_w", "num_boxes"):
        try:
            value = float(row[name])
        except ValueError:
            raise ConvertError(f"{where}: field {name!r} is {row[name][:40]!r}, not a number") from None
        if not (np.isfinite(value) and value > 0) or (name == "num_boxes" and not value.is_integer()):
            raise ConvertError(f"{where}: field {name!r} is {row[name]!r}; expected a positive number")
        record[name] = value
    count = int(record["num_boxes"])
    for name, (dtype, per_region) in _ARRAYS.items():
        record[name] = _decode(row[name], name, dtype, where).reshape(-1)
        if record[name].size != count * per_region:
            raise ConvertError(
                f"{where}: field {name!r} holds {record[name].size} values; num_boxes {count} needs "
                f"{count * per_region}"
            )
    feat = _decode(row["features"], "features", "<f4", where)
    if feat.size == 0 or feat.size % count:
        raise ConvertError(f"{where}: field 'features' holds {feat.size} values, not num_boxes {count} x D")
    record["boxes"] = record["boxes"].reshape(count, 4)
    record["features"] = feat.reshape(count, feat.size // count)
    return record


def _decode(text: str, name: str, dtype: str, where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConvertError(f"{where}: field {name!r}: base64 does not decode ({exc})") from None
    size = np.dtype(dtype).itemsize
    if len(raw) % size:
        raise ConvertError(f"{where}: field {name!r}: {len(raw)} bytes, not a whole number of {dtype} values")
    return np.frombuffer(raw, dtype=dtype)


def normalised_boxes(boxes: np.ndarray, img_h: float, img_w: float, where: str) -> np.ndarray:
    """Pixel (N, 4) x1, y1, x2, y2 -> float32 (N, 7) as the module docstring says."""
    scale = np.array([img_w, img_h, img_w, img_h], dtype=np.float64)
    corners = np.clip(boxes.astype(np.float64) / scale, 0.0, 1.0)
    width, height = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
    if (width < 0).any() or (height < 0).any():
        raise ConvertError(f"{where}: field 'boxes' has a box with x2 < x1 or y2 < y1")
    return np.column_stack([corners, width, height, width * height]).astype(np.float32)


def to_sample(record: dict[str, Any], split: str, texts: list[str], key: str, where: str) -> dict[str, Any]:
    return {
        "__key__": key,
        "json": {
            "id": record["img_id"],
            "split": split,
            "texts": list(texts),
            "img_h": int(record["img_h"]),
            "img_w": int(record["img_w"]),
        },
        "feat.npy": record["features"].astype(np.float16),
        "box.npy": normalised_boxes(record["boxes"], record["img_h"], record["img_w"], where),
    }


def convert_lxmert(
    tsv: Path,
    captions: Sequence[Path],
    out: Path,
    *,
    split: str,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
) -> tuple[Result, int]:
    """Convert; returns the writer's result and how many TSV images had no caption (not converted)."""
    tsv, out = Path(tsv), Path(out)
    check_target(out, overwrite, split)
    texts = load_captions([Path(p) for p in captions])
    rows = index_tsv(tsv)
    kept = [row for row in rows if texts.get(row[0])]
    keys = [safe_key(img_id) for img_id, _, _ in kept]
    with open(tsv, "rb") as handle:

        def load(i: int) -> dict[str, Any]:
            img_id, line_no, offset = kept[i]
            record = read_record(handle, tsv, line_no, offset)
            where = f"LXMERT TSV {tsv} line {line_no} (img_id {img_id!r})"
            return to_sample(record, split, texts[img_id], keys[i], where)

        feat_dim = load(0)["feat.npy"].shape[1] if kept else 0
        plan = Plan(
            fmt="lxmert",
            split=split,
            keys=keys,
            load=load,
            source={
                "format": "lxmert",
                "tsv": str(tsv.resolve()),
                "captions": [str(Path(p).resolve()) for p in captions],
            },
            inputs=[tsv, *map(Path, captions)],
            feat_dim=feat_dim,
            num_classes=DETECTOR_CLASSES,
            has_soft=False,
            extra_meta={"skipped_without_texts": len(rows) - len(kept)},
        )
        result = write_shards(plan, out, samples_per_shard=samples_per_shard, overwrite=overwrite)
    return result, len(rows) - len(kept)
