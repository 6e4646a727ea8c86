"""The shard sample format that every source of shards writes and every reader checks.

One sample of a webdataset tar:
- `__key__`: unique in the dataset, without "." (webdataset splits file names at the first dot);
- `json`: a dict with at least `id` (str), `split` (str) and `texts` (non-empty list of str), plus the
  source's own fields (the shapes world stores its `scene`; tasks add labels and answers);
- `feat.npy`: float16 (N, D) region features, N >= 1;
- `box.npy`: float32 (N, 7) boxes `[x1, y1, x2, y2, w, h, w*h]` normalised to [0, 1];
- `soft.npy` (optional): float16 (N, C) detector class scores, the MRC-kl target;
- `png` or `jpg` (optional): the encoded image, for patch models (ViLT): rendered by `lottery data
  shapes --render`, or copied from a converted dataset's own image bytes.

A sample needs region features (`feat.npy` and `box.npy`), an image, or both: region models (UNITER,
LXMERT) read the first, patch models the second, and a dataset that lacks what a model reads is
refused when the sample is read (`lottery.data.pipeline`).

Writers build a decoded sample (dict of Python objects and arrays), `validate_sample` it and
`encode_sample` it; readers `decode_sample` then `validate_sample`, so a bad sample fails at the boundary
with a `ShardError` that names the shard file, the sample key and the problem.

A dataset is a directory of shards plus `meta.json`, written last, whose `shards` maps each split to
its shard file names: readers trust only a directory that has it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

META_NAME = "meta.json"
BOX_DIM = 7
REQUIRED_FIELDS: tuple[str, ...] = ("json",)
REGION_FIELDS: tuple[str, ...] = ("feat.npy", "box.npy")
# Encoded image fields and the magic bytes each format's files start with.
IMAGE_MAGIC: dict[str, bytes] = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff"}
# Boxes come from float arithmetic in converters; allow rounding, not un-normalised pixel boxes.
_BOX_SLACK = 1e-3
_TAR_BLOCK = 512
_FIX = "rebuild the dataset (for the shapes world: delete the directory and run `lottery data shapes`) or fix the converter that wrote it"


class ShardError(ValueError):
    """A shard or one of its samples does not follow the schema; the message names file and key.

    It takes one message argument so that it survives being re-raised from a DataLoader worker.
    """


def listed_shards(data_dir: Path) -> dict[str, list[str]]:
    """split -> shard file names, as the dataset's meta.json lists them (the one reading of that list).

    Raises FileNotFoundError without a meta.json (written last: the dataset is unfinished) and
    ValueError when it lists no shards per split; callers decide whether that is fatal yet.
    """
    meta_path = Path(data_dir) / META_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{data_dir}: no {META_NAME}, so this is not a finished dataset (its writer stops before "
            "writing it last); build it again, e.g. `lottery data shapes --out DIR`"
        )
    try:
        splits = json.loads(meta_path.read_text())["shards"]
        return {str(split): [str(name) for name in names] for split, names in splits.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{meta_path}: lists no shards per split ({exc!r})") from exc


def shard_error(shard: str, key: str | None, problem: str) -> ShardError:
    """The one wording of schema errors: where (shard file, sample key), what, and the fix."""
    where = f"shard {shard}" if key is None else f"shard {shard}, sample {key!r}"
    return ShardError(f"{where}: {problem}; {_FIX}")


def check_tar_end(path: Path) -> None:
    """Raise `ShardError` unless the shard at `path` ends as every tar writer ends one: a whole number of
    512-byte blocks, the last two all zero (the end-of-archive marker).

    A shard cut short (a full disk, a killed copy) fails this from its last KB, so a job refuses it before
    it starts, not at the step whose batch reaches the cut, with a run directory already begun.
    """
    size = path.stat().st_size
    end = _TAR_BLOCK * 2
    if size >= end and size % _TAR_BLOCK == 0:
        with path.open("rb") as tar:
            tar.seek(size - end)
            if not any(tar.read(end)):
                return
    raise shard_error(
        str(path), None, f"truncated: {size} bytes, no end-of-archive marker (two zero 512-byte blocks)"
    )


def encode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Bytes for `webdataset.TarWriter(encoder=False)`; JSON with sorted keys so equal samples are equal bytes."""
    encoded: dict[str, Any] = {"__key__": sample["__key__"]}
    for field, value in sample.items():
        if field == "json":
            encoded[field] = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        elif field.endswith(".npy"):
            stream = io.BytesIO()
            np.lib.format.write_array(stream, value, allow_pickle=False)
            encoded[field] = stream.getvalue()
        elif not field.startswith("__"):
            encoded[field] = value
    return encoded


def decode_sample(raw: dict[str, Any], shard: str) -> dict[str, Any]:
    """Decode the `json` and `*.npy` fields of a sample read from a tar; other fields pass through."""
    key = raw.get("__key__")
    decoded: dict[str, Any] = {}
    for field, value in raw.items():
        try:
            if field == "json":
                decoded[field] = json.loads(value)
            elif field.endswith(".npy"):
                decoded[field] = np.load(io.BytesIO(value), allow_pickle=False)
            else:
                decoded[field] = value
        except (ValueError, EOFError, OSError) as exc:
            raise shard_error(shard, key, f"cannot decode {field!r} ({exc})") from exc
    return decoded


def validate_sample(sample: dict[str, Any], shard: str, feat_dim: int | None = None) -> None:
    """Raise `ShardError` unless the decoded `sample` follows the schema in this module's docstring.

    `feat_dim`: the D its dataset's meta.json records, when the reader knows it; a sample of another D
    would otherwise pass here and fail later, as a bare shape error in the collate of its batch.
    """
    key = sample.get("__key__")
    if not isinstance(key, str) or not key or "." in key:
        raise shard_error(shard, None, f"bad __key__ {key!r}: need a non-empty string without '.'")
    missing = [f for f in REQUIRED_FIELDS if f not in sample]
    if missing:
        present = sorted(f for f in sample if not f.startswith("__"))
        raise shard_error(shard, key, f"missing field(s) {missing} (present: {present})")
    _check_json(sample["json"], shard, key)
    images = [f for f in IMAGE_MAGIC if f in sample]
    if len(images) > 1:
        raise shard_error(shard, key, f"has two images ({images}); a sample holds one")
    for field in images:
        _check_image(sample[field], field, shard, key)
    regions_given = [f for f in REGION_FIELDS if f in sample]
    if not regions_given and images:
        if "soft.npy" in sample:
            raise shard_error(shard, key, "soft.npy without feat.npy and box.npy: scores of which regions?")
        return
    missing = [f for f in REGION_FIELDS if f not in sample]
    if missing:
        present = sorted(f for f in sample if not f.startswith("__"))
        raise shard_error(
            shard,
            key,
            f"missing field(s) {missing} (present: {present}); a sample needs regions, an image or both",
        )
    feat = _array(sample, "feat.npy", np.float16, shard, key)
    if feat.ndim != 2 or feat.shape[0] < 1 or feat.shape[1] < 1:
        raise shard_error(shard, key, f"feat.npy has shape {feat.shape}; expected (N, D) with N, D >= 1")
    if feat_dim is not None and feat.shape[1] != feat_dim:
        raise shard_error(
            shard, key, f"feat.npy has shape {feat.shape}; expected (N, {feat_dim}): meta.json's feat_dim"
        )
    regions = feat.shape[0]
    box = _array(sample, "box.npy", np.float32, shard, key)
    if box.shape != (regions, BOX_DIM):
        raise shard_error(
            shard, key, f"box.npy has shape {box.shape}; expected ({regions}, {BOX_DIM}) to match feat.npy"
        )
    if box.min() < -_BOX_SLACK or box.max() > 1 + _BOX_SLACK:
        raise shard_error(
            shard, key, f"box.npy values span [{box.min()}, {box.max()}]; boxes must be normalised to [0, 1]"
        )
    if "soft.npy" in sample:
        soft = _array(sample, "soft.npy", np.float16, shard, key)
        if soft.ndim != 2 or soft.shape[0] != regions or soft.shape[1] < 1:
            raise shard_error(
                shard, key, f"soft.npy has shape {soft.shape}; expected ({regions}, C) to match feat.npy"
            )


def _check_json(meta: Any, shard: str, key: str) -> None:
    if not isinstance(meta, dict):
        raise shard_error(shard, key, f"json is a {type(meta).__name__}; expected an object")
    for field in ("id", "split"):
        if not isinstance(meta.get(field), str):
            raise shard_error(shard, key, f"json field {field!r} is {meta.get(field)!r}; expected a string")
    texts = meta.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise shard_error(
            shard, key, f"json field 'texts' is {texts!r}; expected a non-empty list of non-empty strings"
        )


def _check_image(value: Any, field: str, shard: str, key: str) -> None:
    """Bytes that start as a `field` file does; decoding is left to the reader, which names the sample too."""
    if not isinstance(value, bytes | bytearray) or not value:
        raise shard_error(
            shard, key, f"{field} is {type(value).__name__} of no bytes; expected encoded image bytes"
        )
    if not bytes(value[: len(IMAGE_MAGIC[field])]) == IMAGE_MAGIC[field]:
        raise shard_error(
            shard, key, f"{field} does not start with the {field.upper()} signature: not a {field} file"
        )


def _array(sample: dict[str, Any], field: str, dtype: type, shard: str, key: str) -> np.ndarray:
    value = sample[field]
    if not isinstance(value, np.ndarray):
        raise shard_error(shard, key, f"{field} is a {type(value).__name__}; expected a numpy array")
    if value.dtype != dtype:
        raise shard_error(shard, key, f"{field} has dtype {value.dtype}; expected {np.dtype(dtype)}")
    if not np.isfinite(value).all():
        raise shard_error(shard, key, f"{field} has {int((~np.isfinite(value)).sum())} non-finite values")
    return value
