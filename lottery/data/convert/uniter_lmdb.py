"""UNITER's image LMDB (+ its text LMDBs for the captions) -> shards, one sample per captioned image.

An image DB maps an image file name (`coco_train2014_000000000009.npz`) to that image's detector
output: `features` (N, D), `norm_bb` (N, 6: x1, y1, x2, y2, w, h in [0, 1]), `conf` (N,) and
`soft_labels` (N, C). The value is msgpack with msgpack_numpy arrays; "compressed" DBs hold either
that msgpack lz4.frame-compressed, or (UNITER's own `*_compressed` DBs, scripts/convert_imgdir.py) a
`np.savez_compressed` archive: each value is recognised by its magic bytes, so every variant reads.
A text DB maps a text id to an lz4-compressed msgpack example, with `txt2img.json` beside it.

`box.npy` is norm_bb plus the w*h column (UNITER's own 7-d box); `soft.npy` is soft_labels, the
MRC-kl target. The shard schema needs raw text, which UNITER's examples keep under a task-dependent
key: the first of `TEXT_KEYS` that an example has is taken. Texts that txt2img assigns to an image
pair (NLVR2) describe two images, true or false, so they are no caption of either: they are counted,
not used. Samples follow the image DB's key order (LMDB keeps keys sorted), images without any text
left out, so the shards are fixed slices of the input and a rerun resumes (writer.py). Values are
read one at a time from a read-only, lock-free transaction: memory holds the key list, not the DB.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

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

# where UNITER's examples keep the raw text: `raw` in the caption (pre-training, ITM) DBs,
# `sentence` in NLVR2's (prepro.py), `sent` in the referring expressions', `question` in VQA's
TEXT_KEYS: tuple[str, ...] = ("raw", "sentence", "sent", "caption", "question")
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_ZIP_MAGIC = b"PK\x03\x04"


def unpack(raw: bytes, where: str) -> dict[str, Any]:
    """One LMDB value as a dict: lz4 frame and npz recognised by magic, else plain msgpack."""
    import lz4.frame
    import msgpack
    import msgpack_numpy

    def arrays(obj: dict) -> Any:
        if obj.get(b"nd") is True and obj.get(b"kind") == b"O":  # msgpack_numpy would unpickle it
            raise ConvertError(
                f"{where}: an object array (a pickle) in the value; refused, it could run code"
            )
        return msgpack_numpy.decode(obj)

    try:
        if raw[:4] == _LZ4_MAGIC:
            raw = lz4.frame.decompress(raw)
        if raw[:4] == _ZIP_MAGIC:
            with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
                value: Any = {name: archive[name] for name in archive.files}
        else:
            value = msgpack.unpackb(raw, raw=False, object_hook=arrays)
    except ConvertError:
        raise
    except (ValueError, TypeError, KeyError, EOFError, OSError, RuntimeError, msgpack.UnpackException) as exc:
        raise ConvertError(f"{where}: the value does not decode ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise ConvertError(f"{where}: the value is a {type(value).__name__}, expected a mapping")
    return value


def open_db(path: Path, what: str) -> Any:
    """A read-only LMDB environment; `lock=False` so a DB on a read-only or shared disk opens too."""
    import lmdb

    try:
        return lmdb.open(str(path), readonly=True, lock=False, create=False, readahead=False)
    except lmdb.Error as exc:
        raise ConvertError(f"UNITER {what} {path}: cannot be opened as an LMDB directory ({exc})") from None


def image_keys(txn: Any, db: Path) -> list[str]:
    """Every image name of the DB, in key order; UNITER's `__keys__` index entry is not an image."""
    names = []
    for key in txn.cursor().iternext(keys=True, values=False):
        name = bytes(key).decode("utf-8", "replace")
        if not (name.startswith("__") and name.endswith("__")):
            names.append(name)
    return names


def text_groups(txt_dbs: Sequence[Path]) -> tuple[dict[str, list[tuple[int, str]]], int]:
    """Image name -> [(text DB index, text id)] in DB then txt2img order, and how many pair texts."""
    groups: dict[str, list[tuple[int, str]]] = {}
    pairs = 0
    for index, db in enumerate(txt_dbs):
        path = Path(db) / "txt2img.json"
        try:
            txt2img = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConvertError(f"UNITER text DB {db}: no readable txt2img.json ({exc})") from None
        if not isinstance(txt2img, dict):
            raise ConvertError(f"UNITER text DB {db}: txt2img.json is not a mapping of text id -> image")
        for txt_id, image in txt2img.items():
            if isinstance(image, list):
                pairs += 1
            elif isinstance(image, str):
                groups.setdefault(image, []).append((index, str(txt_id)))
            else:
                raise ConvertError(f"UNITER text DB {db}: txt2img.json maps {txt_id!r} to {image!r}")
    return groups, pairs


def read_text(txn: Any, db: Path, txt_id: str) -> str:
    """The raw text of one example: the first of TEXT_KEYS it holds."""
    where = f"UNITER text DB {db}, key {txt_id!r}"
    raw = txn.get(txt_id.encode("utf-8"))
    if raw is None:
        raise ConvertError(f"{where}: listed in txt2img.json but not in the DB")
    example = unpack(bytes(raw), where)
    for key in TEXT_KEYS:
        if isinstance(example.get(key), str) and example[key].strip():
            return example[key]
    raise ConvertError(
        f"{where}: no raw text under any of {list(TEXT_KEYS)} (the example has fields {sorted(map(str, example))})"
    )


def read_image(txn: Any, db: Path, name: str, with_soft: bool | None) -> dict[str, np.ndarray]:
    """features, norm_bb and soft_labels (required if `with_soft`, taken if present when None) of one
    image, their shapes checked against each other."""
    where = f"UNITER image DB {db}, key {name!r}"
    raw = txn.get(name.encode("utf-8"))
    if raw is None:
        raise ConvertError(f"{where}: missing from the DB")
    value = unpack(bytes(raw), where)
    if with_soft is None:
        with_soft = "soft_labels" in value
    fields = {"features": None, "norm_bb": 6} | ({"soft_labels": None} if with_soft else {})
    arrays: dict[str, np.ndarray] = {}
    for field, width in fields.items():
        if field not in value:
            raise ConvertError(
                f"{where}: field {field!r} is missing (the value has {sorted(map(str, value))})"
            )
        array = np.asarray(value[field])
        if array.ndim != 2 or array.shape[0] < 1 or (width is not None and array.shape[1] != width):
            expected = f"(N, {width})" if width is not None else "(N, C) with N >= 1"
            raise ConvertError(f"{where}: field {field!r} has shape {array.shape}; expected {expected}")
        if array.shape[0] != len(arrays.get("features", array)):
            raise ConvertError(
                f"{where}: field {field!r} has {array.shape[0]} regions but 'features' has "
                f"{len(arrays['features'])}"
            )
        arrays[field] = array
    return arrays


def to_sample(arrays: dict[str, np.ndarray], name: str, split: str, texts: list[str], ids: list[str]) -> dict:
    bb = arrays["norm_bb"].astype(np.float32)
    sample: dict[str, Any] = {
        "__key__": safe_key(name.removesuffix(".npz")),
        "json": {"id": name, "split": split, "texts": texts, "text_ids": ids},
        "feat.npy": arrays["features"].astype(np.float16),
        "box.npy": np.concatenate([bb, bb[:, 4:5] * bb[:, 5:6]], axis=1),
    }
    if "soft_labels" in arrays:
        sample["soft.npy"] = arrays["soft_labels"].astype(np.float16)
    return sample


def convert_uniter(
    img_db: Path,
    txt_dbs: Sequence[Path],
    out: Path,
    *,
    split: str,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
) -> tuple[Result, dict[str, int]]:
    """Convert; returns the writer's result and the counts of what was left out (and why)."""
    img_db, out, txt_dbs = Path(img_db), Path(out), [Path(db) for db in txt_dbs]
    if not txt_dbs:
        raise ConvertError(
            f"UNITER image DB {img_db}: a sample needs at least one text and the image DB holds none; "
            "give the text DB(s) of these images"
        )
    check_target(out, overwrite, split)
    groups, pairs = text_groups(txt_dbs)
    with ExitStack() as stack:
        image_txn = stack.enter_context(open_db(img_db, "image DB")).begin(buffers=True)
        stack.callback(image_txn.abort)
        text_txns = []
        for db in txt_dbs:
            text_txns.append(stack.enter_context(open_db(db, "text DB")).begin(buffers=True))
            stack.callback(text_txns[-1].abort)
        names = image_keys(image_txn, img_db)
        kept = [name for name in names if name in groups]
        first = read_image(image_txn, img_db, kept[0], with_soft=None) if kept else {}
        with_soft = "soft_labels" in first

        def load(i: int) -> dict[str, Any]:
            name = kept[i]
            members = groups[name]
            texts = [read_text(text_txns[db], txt_dbs[db], txt_id) for db, txt_id in members]
            arrays = read_image(image_txn, img_db, name, with_soft)
            return to_sample(arrays, name, split, texts, [txt_id for _, txt_id in members])

        present = set(names)
        skipped = {
            "images_without_texts": len(names) - len(kept),
            "texts_without_image": sum(len(v) for k, v in groups.items() if k not in present),
            "pair_texts": pairs,
        }
        plan = Plan(
            fmt="uniter",
            split=split,
            keys=[safe_key(name.removesuffix(".npz")) for name in kept],
            load=load,
            source={
                "format": "uniter",
                "img_db": str(img_db.resolve()),
                "txt_db": [str(db.resolve()) for db in txt_dbs],
            },
            inputs=[img_db, *txt_dbs],
            feat_dim=int(first["features"].shape[1]) if kept else 0,
            num_classes=int(first["soft_labels"].shape[1]) if with_soft else DETECTOR_CLASSES,
            has_soft=with_soft,
            extra_meta={"skipped": skipped},
        )
        result = write_shards(plan, out, samples_per_shard=samples_per_shard, overwrite=overwrite)
    return result, skipped
