"""Karpathy's caption splits, `dataset_coco.json` / `dataset_flickr30k.json`, the retrieval benchmark files.

`{"images": [{filename, imgid, split, sentences: [{raw, tokens, sentid, imgid}], cocoid?}], "dataset"}`;
COCO's split has 5k val, 5k test and the "restval" images that training adds to "train".
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

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

SPLITS = ("train", "restval", "val", "test")


def parse_karpathy(path: Path, split: str | None = None) -> list[TaskExample]:
    """One example per caption of the images in `split` (all if None), uid the caption's `sentid`.

    Image key `coco-<cocoid>` for COCO, the key its COCO region features already have, else
    `<dataset>-<filename stem>`; `text` is the raw caption, `fields["caption_index"]` its position
    among its image's captions.
    """
    require_split(split, SPLITS)
    path = Path(path)
    content = read_json(path)
    dataset = require_text(require_object(content, At(path), "the file"), "dataset", At(path))
    examples, seen = [], {}
    for at, image in json_records(content, path, "images"):
        if split is not None and require(image, "split", str, at) != split:
            continue
        imgid = require(image, "imgid", int, at)
        if dataset == "coco" and "cocoid" in image:
            key = f"coco-{require(image, 'cocoid', int, at)}"
        else:
            key = f"{dataset}-{PurePosixPath(require_text(image, 'filename', at)).stem}"
        sentences = require(image, "sentences", list, at)
        if not sentences:
            raise at.error("no sentences")
        for index, item in enumerate(sentences):
            sent_at = at.inner(f"sentences[{index}]")
            sentence = require_object(item, sent_at, "a sentence")
            if require(sentence, "imgid", int, sent_at) != imgid:
                raise sent_at.error(f"imgid {sentence['imgid']} inside image {imgid}")
            uid = str(require(sentence, "sentid", int, sent_at))
            claim_uid(seen, uid, sent_at)
            text = require_text(sentence, "raw", sent_at)
            examples.append(make_example(sent_at, "retrieval", uid, (key,), text, {"caption_index": index}))
    if not examples and split is not None:
        raise At(path).error(f"no images of split {split!r}")
    return examples
