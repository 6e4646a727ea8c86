"""RefCOCO+ (and the other refer-toolkit datasets): refs JSON plus the COCO instances JSON they point into.

The refer toolkit ships refs as `refs(unc).p`, a pickle; we read only their JSON conversion (the same
list of refs), because unpickling a downloaded file runs whatever code it carries.
A ref is one annotated object (`ann_id`) with several referring sentences; its box and image size
come from the instances file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lottery.data.annotations.errors import (
    At,
    claim_uid,
    json_records,
    make_example,
    read_json,
    require,
    require_object,
    require_split,
    require_text,
)
from lottery.data.examples import TaskExample

SPLITS = ("train", "val", "test", "testA", "testB")  # RefCOCO+ has no "test"; RefCOCOg has only "test"


def parse_refcoco(refs: Path, instances: Path, split: str | None = None) -> list[TaskExample]:
    """One example per referring sentence of the refs in `split` (all refs if None), in file order.

    uid `<ref_id>-<sent_id>`, image key `coco-<image_id>`, `text` the toolkit's normalised sentence
    (`sent`). `fields`: `bbox` [x, y, w, h] in pixels, `image_size` [w, h], and `ref_id`, `ann_id`
    to find the object among the image's ground-truth regions.
    """
    require_split(split, SPLITS)
    refs, instances = Path(refs), Path(instances)
    coco = read_json(instances)  # hundreds of MB for the full COCO train2014: read it once
    annotations = _by_id(coco, instances, "annotations")
    images = _by_id(coco, instances, "images")
    examples, seen = [], {}
    for at, ref in json_records(read_json(refs), refs, None):
        if split is not None and require(ref, "split", str, at) != split:
            continue
        ref_id, ann_id = require(ref, "ref_id", int, at), require(ref, "ann_id", int, at)
        image_id = require(ref, "image_id", int, at)
        if ann_id not in annotations:
            raise at.error(f"ann_id {ann_id} is not in {instances}; are these refs of another dataset?")
        if image_id not in images:
            raise at.error(f"image_id {image_id} is not in {instances}; are these refs of another dataset?")
        bbox = _bbox(*annotations[ann_id], image_id)
        size = _image_size(*images[image_id])
        sentences = require(ref, "sentences", list, at)
        if not sentences:
            raise at.error("no sentences")
        for i, item in enumerate(sentences):
            sent_at = at.inner(f"sentences[{i}]")
            sentence = require_object(item, sent_at, "a sentence")
            uid = f"{ref_id}-{require(sentence, 'sent_id', int, sent_at)}"
            claim_uid(seen, uid, sent_at)
            text = require_text(sentence, "sent", sent_at)
            fields = {"bbox": list(bbox), "image_size": list(size), "ref_id": ref_id, "ann_id": ann_id}
            examples.append(make_example(sent_at, "refcoco+", uid, (f"coco-{image_id}",), text, fields))
    if not examples and split is not None:
        raise At(refs).error(f"no refs of split {split!r}")
    return examples


def _by_id(coco: Any, instances: Path, key: str) -> dict[int, tuple[At, Mapping[str, Any]]]:
    """{id: (location, record)} of the instances file's `images` or `annotations`.

    Records are checked only when a ref uses them: the full COCO files hold a few degenerate boxes
    that no ref points at and that must not make the file unreadable.
    """
    by_id: dict[int, tuple[At, Mapping[str, Any]]] = {}
    for at, record in json_records(coco, instances, key):
        record_id = require(record, "id", int, at)
        if record_id in by_id:
            raise at.error(f"id {record_id} is listed twice, first at {by_id[record_id][0]}")
        by_id[record_id] = (at, record)
    return by_id


def _bbox(at: At, annotation: Mapping[str, Any], image_id: int) -> list[float]:
    """The annotation's [x, y, w, h], checked to be a real box on the ref's image."""
    if require(annotation, "image_id", int, at) != image_id:
        raise at.error(f"is on image {annotation['image_id']}, but a ref of image {image_id} points at it")
    bbox = require(annotation, "bbox", list, at)
    if len(bbox) != 4 or not all(_is_number(v) for v in bbox) or bbox[2] <= 0 or bbox[3] <= 0:
        raise at.error(f"'bbox' must be [x, y, w, h] with w, h > 0, got {bbox}")
    return [float(v) for v in bbox]


def _image_size(at: At, image: Mapping[str, Any]) -> list[int]:
    """[width, height] in pixels."""
    size = [require(image, "width", int, at), require(image, "height", int, at)]
    if min(size) <= 0:
        raise at.error(f"image size {size} is not positive")
    return size


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
