"""The resumable shard writer every converter shares: `<out>` appears complete, or not at all.

Converting a real feature file takes hours, so a killed conversion must not start over. The work
happens in a hidden sibling `.<out name>.partial/`, kept across a kill. Shard `i` is always samples
`[i * samples_per_shard, (i + 1) * samples_per_shard)` of the converter's fixed sample order, and is
written through `open_atomic` under its final name, so a shard file there is complete and correct:
a rerun skips it and writes only the others. The work directory records the input it was built from
(paths, sizes, mtimes) and the settings; a rerun against other input or settings starts afresh
rather than mixing two conversions. `meta.json` is written last, then the directory is renamed to
`<out>`, which is what readers (`pipeline.shard_urls`) trust.

A dataset holds a train and a val split (training reads both from one directory), so converting a
split into an `<out>` that holds the other adds it: the new shards are moved in beside the others
and `meta.json` is rewritten (atomically) to list both, once the feature size and the classes are
seen to agree. At every moment `meta.json` lists only complete shards.

An image-only dataset (ViLT's tables: encoded images, no region features) has `feat_dim` null in
`meta.json`, no detector classes, and `image_field`: the image field its samples carry ("jpg" or
"png"; a list of both when the input mixes them). Region datasets keep `feat_dim` and have no
`image_field`, so their `meta.json` is as before.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lottery.data.schema import (
    IMAGE_MAGIC,
    META_NAME,
    ShardError,
    encode_sample,
    shard_error,
    validate_sample,
)
from lottery.data.shards import add_sample  # the shapes world's tar layout: byte-identical shards
from lottery.files import fsync_dir, open_atomic, write_json_atomic
from lottery.progress import progress_bar

PLAN_NAME = "convert-plan.json"  # in the work directory only: what its shards were built from
_WRITE_BUFFER = 1 << 22  # as shards.py: fewer system calls for tarfile's 10 KB records
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
# the bottom-up-attention detector's classes in UNITER's numbering: background + 1600 Visual Genome objects
DETECTOR_CLASSES = 1601


class ConvertError(ShardError):
    """An input record that cannot be converted; the message names the input, the record and the field.

    A ShardError, so the `lottery` command reports it as one line with exit code 2.
    """


@dataclass(frozen=True)
class Plan:
    """What a converter hands the writer: the samples in a fixed order, and where they came from.

    `load(i)` builds decoded sample `i` (schema.py) from the input on demand, so memory holds one
    sample at a time whatever the input size; `keys` is the `__key__` of every sample, in order.
    """

    fmt: str
    split: str
    keys: Sequence[str]
    load: Callable[[int], dict[str, Any]]
    source: dict[str, Any]  # format and input paths, stored in meta.json
    inputs: Sequence[Path]  # files or directories whose sizes and mtimes identify the input
    feat_dim: int | None  # None: an image-only dataset, no region features
    num_classes: int  # width of soft.npy, or the detector's class count when there is none (0: image-only)
    has_soft: bool
    extra_meta: dict[str, Any] = field(default_factory=dict)
    # the image fields (schema.IMAGE_MAGIC) its samples carry, every sample one of them; () = none
    image_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    out: Path
    samples: int
    shards: int
    reused: int  # shards found complete in the work directory and not rewritten


def safe_key(raw: str) -> str:
    """A `__key__` from a source id: webdataset splits member names at the first ".", so no dots
    (nor slashes or spaces) may remain."""
    return _UNSAFE_KEY_CHARS.sub("_", raw) or "_"


def work_dir(out: Path) -> Path:
    """The hidden sibling where `out` is built; it survives a kill so that the next run resumes."""
    return out.with_name(f".{out.name}.partial")


def shard_names(split: str, total: int, samples_per_shard: int) -> list[str]:
    return [f"{split}-{i:06d}.tar" for i in range(math.ceil(total / samples_per_shard))]


def check_target(out: Path, overwrite: bool, split: str) -> None:
    """Refuse, before any work, to replace a split (or a non-empty directory that is no dataset) unasked;
    a dataset holding only the other split is fine: this split is added to it."""
    if overwrite or not out.exists():
        return
    if (out / META_NAME).is_file():
        held = sorted(_read_meta(out).get("shards", {}))
        if split in held:
            raise FileExistsError(
                f"{out} already holds a finished {split} split; pass --overwrite to replace it"
            )
        return
    if not out.is_dir() or any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists and is not an empty directory; remove it or choose another --out"
        )


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_NAME
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConvertError(
            f"{path}: unreadable ({err}); remove {directory} or choose another --out"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("shards"), dict):
        raise ConvertError(f"{path}: not a dataset's meta.json (no 'shards' mapping)")
    return meta


def fingerprint(paths: Sequence[Path]) -> dict[str, list[int]]:
    """(size, mtime_ns) of each input file, and of each file in an input directory (LMDB's lock.mdb
    aside: any reader with locks on rewrites it, the data does not change)."""
    stamp: dict[str, list[int]] = {}
    for path in paths:
        path = Path(path).resolve()
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.name != "lock.mdb":
                stat = file.stat()
                stamp[str(file)] = [stat.st_size, stat.st_mtime_ns]
    return stamp


def write_shards(plan: Plan, out: Path, *, samples_per_shard: int, overwrite: bool = False) -> Result:
    """Convert `plan` into the dataset directory `out`, resuming a killed conversion of the same input."""
    out = Path(out)
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    check_target(out, overwrite, plan.split)
    if not plan.keys:
        raise ConvertError(f"{plan.fmt} input {plan.source}: no sample to convert for split {plan.split!r}")
    _check_unique(plan)
    stamp = {
        "format": plan.fmt,
        "split": plan.split,
        "samples": len(plan.keys),
        "samples_per_shard": samples_per_shard,
        "input": fingerprint(plan.inputs),
    }
    work = work_dir(out)
    names = shard_names(plan.split, len(plan.keys), samples_per_shard)
    _prepare(work, stamp)
    reused = [name for name in names if (work / name).is_file()]
    if not (work / META_NAME).is_file():
        _write_missing(plan, work, names, samples_per_shard)
        meta = {
            "counts": {plan.split: len(plan.keys)},
            "shards": {plan.split: names},
            "feat_dim": plan.feat_dim,
            "class_names": [f"class-{i:04d}" for i in range(plan.num_classes)],  # unnamed in both formats
            "soft_labels": plan.has_soft,
            **({"image_field": image_field_meta(plan.image_fields)} if plan.image_fields else {}),
            # per split: where it came from and how (a dataset may hold splits of two conversions)
            "splits": {
                plan.split: {
                    "source": plan.source,
                    "samples_per_shard": samples_per_shard,
                    "convert": stamp,
                    **({"image_field": image_field_meta(plan.image_fields)} if plan.image_fields else {}),
                    **plan.extra_meta,
                }
            },
        }
        write_json_atomic(work / META_NAME, meta)
    if (out / META_NAME).is_file() and set(_read_meta(out)["shards"]) - {plan.split}:
        _add_split(work, out, plan.split)
    else:
        (work / PLAN_NAME).unlink(missing_ok=True)
        _publish(work, out, overwrite)
    return Result(out=out, samples=len(plan.keys), shards=len(names), reused=len(reused))


def image_field_meta(fields: Sequence[str]) -> str | list[str]:
    """`meta.json`'s `image_field`: the one field every sample carries, or the sorted list when mixed."""
    unique = sorted(set(fields))
    return unique[0] if len(unique) == 1 else unique


def _check_unique(plan: Plan) -> None:
    seen: set[str] = set()
    for key in plan.keys:
        if key in seen:
            raise ConvertError(
                f"{plan.fmt} input {plan.source}: two images give the sample key {key!r} "
                "(ids equal once '.', '/' and spaces become '_'); the split would hold a duplicate"
            )
        seen.add(key)


def _stored_stamp(work: Path) -> Any:
    for name, pick in (
        (PLAN_NAME, lambda d: d),
        (META_NAME, lambda d: next(iter(d["splits"].values()))["convert"]),
    ):
        path = work / name
        if path.is_file():
            try:
                return pick(json.loads(path.read_text()))
            except (OSError, ValueError, AttributeError, KeyError, StopIteration, TypeError):
                return None
    return None


def _prepare(work: Path, stamp: dict[str, Any]) -> None:
    """Reuse `work` if it was built from the same input and settings, else start it afresh."""
    if work.exists() and _stored_stamp(work) != stamp:
        shutil.rmtree(work)
    if not work.exists():
        work.mkdir(parents=True)
        write_json_atomic(work / PLAN_NAME, stamp)
    for temp in work.glob(".*.tmp"):  # what open_atomic leaves when its writer is killed outright
        temp.unlink()


def _write_missing(plan: Plan, work: Path, names: list[str], samples_per_shard: int) -> None:
    total = len(plan.keys)
    done = sum(
        min(total, (i + 1) * samples_per_shard) - i * samples_per_shard
        for i, name in enumerate(names)
        if (work / name).is_file()
    )
    with progress_bar(total=total, initial=done, desc=f"{plan.fmt} {plan.split}", unit="image") as bar:
        for i, name in enumerate(names):
            if (work / name).is_file():
                continue
            start, stop = i * samples_per_shard, min(total, (i + 1) * samples_per_shard)
            write_shard(plan, work / name, start, stop)
            bar.update(stop - start)


def write_shard(plan: Plan, path: Path, start: int, stop: int) -> None:
    """Samples `[start, stop)` as one tar, under `path` only once complete. Each sample is checked
    against the schema, and against the dataset's feature size and class count, before it is written."""
    name = path.name
    with (
        open_atomic(path, buffering=_WRITE_BUFFER) as f,
        tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for index in range(start, stop):
            sample = plan.load(index)
            key = plan.keys[index]
            if sample.get("__key__") != key:
                raise AssertionError(f"converter gave key {sample.get('__key__')!r} for sample {key!r}")
            validate_sample(sample, name)
            _check_dims(plan, sample, name, key)
            add_sample(tar, encode_sample(sample))


def _check_dims(plan: Plan, sample: dict[str, Any], shard: str, key: str) -> None:
    if plan.image_fields:
        given = [f for f in IMAGE_MAGIC if f in sample]
        if not given or given[0] not in plan.image_fields:
            carried = list(plan.image_fields)
            raise shard_error(
                shard, key, f"image field {given or 'missing'}; this dataset's samples carry {carried}"
            )
    if plan.feat_dim is None:
        if "feat.npy" in sample:
            raise shard_error(shard, key, "feat.npy present in an image-only dataset, unlike the rest")
        return
    width = sample["feat.npy"].shape[1]
    if width != plan.feat_dim:
        raise shard_error(
            shard, key, f"feat.npy has {width}-d features; this dataset's are {plan.feat_dim}-d"
        )
    if ("soft.npy" in sample) != plan.has_soft:
        raise shard_error(
            shard, key, f"soft.npy {'missing' if plan.has_soft else 'present'}, unlike the rest"
        )
    if plan.has_soft and sample["soft.npy"].shape[1] != plan.num_classes:
        raise shard_error(
            shard, key, f"soft.npy has {sample['soft.npy'].shape[1]} classes; expected {plan.num_classes}"
        )


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _publish(work: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished work directory to `out`; an old `out` (allowed by `overwrite`, or empty)
    is moved aside first and deleted after, so `out` is never a mix of two conversions."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(out, old)
        try:
            os.rename(work, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, out)
    fsync_dir(out.parent)


def _add_split(work: Path, out: Path, split: str) -> None:
    """Move the finished `split` of `work` into the dataset `out`, which holds another split: its
    shards first (under names no other split uses), then `meta.json` listing both, then the old
    shards of `split` (an --overwrite) are deleted. Readers see the old dataset or the new one."""
    new, old = _read_meta(work), _read_meta(out)
    for key in ("feat_dim", "soft_labels"):
        if new[key] != old.get(key):
            raise ConvertError(
                f"{out} holds {sorted(old['shards'])} with {key}={old.get(key)}, but this {split} split has "
                f"{key}={new[key]}; a dataset's splits must agree: convert into another --out"
            )
    if len(new["class_names"]) != len(old.get("class_names", [])):
        raise ConvertError(
            f"{out} holds {len(old.get('class_names', []))} detector classes, this {split} split "
            f"{len(new['class_names'])}; convert into another --out"
        )
    replaced = old["shards"].get(split, [])
    moved = []
    for name in new["shards"][split]:
        target = f"{name[:-4]}-{secrets.token_hex(3)}.tar" if name in replaced else name
        os.rename(work / name, out / target)
        moved.append(target)
    merged = {
        **old,
        "counts": {**old.get("counts", {}), split: new["counts"][split]},
        "shards": {**old["shards"], split: moved},
        "splits": {**old.get("splits", {}), split: new["splits"][split]},
    }
    # the reader takes either image field, so a jpg split and a png split may share a dataset
    images = [f for entry in merged["splits"].values() for f in _as_list(entry.get("image_field"))]
    if not any("image_field" in entry for entry in old.get("splits", {}).values()):
        images += _as_list(old.get("image_field"))  # a dataset that records it only at the top
    if images:
        merged["image_field"] = image_field_meta(images)
    write_json_atomic(out / META_NAME, merged)
    fsync_dir(out)
    for name in replaced:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(work)
