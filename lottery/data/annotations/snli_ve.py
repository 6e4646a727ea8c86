"""SNLI-VE: `snli_ve_<split>.jsonl`, SNLI pairs whose premise sentence is replaced by its Flickr30k image.

Each line is an SNLI record plus `Flikr30kID` (so spelled in the released files), the premise image.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from lottery.data.annotations.errors import claim_uid, make_example, read_jsonl, require_text
from lottery.data.examples import TaskExample

LABELS = ("entailment", "neutral", "contradiction")


def parse_snli_ve(path: Path) -> list[TaskExample]:
    """One example per line, uid the pairID, image key `flickr30k-<image file stem>`.

    `text` is the hypothesis; `fields` hold `label` (one of LABELS) and `premise`, the caption the
    image replaced, kept for the text-only baselines.
    """
    path = Path(path)
    examples, seen = [], {}
    for at, record in read_jsonl(path):
        image = PurePosixPath(require_text(record, "Flikr30kID", at)).stem
        label = require_text(record, "gold_label", at)
        if label not in LABELS:
            raise at.error(f"gold_label {label!r} is not one of {', '.join(LABELS)}")
        uid = require_text(record, "pairID", at)
        fields = {"label": label, "premise": require_text(record, "sentence1", at)}
        text = require_text(record, "sentence2", at)
        claim_uid(seen, uid, at)
        examples.append(make_example(at, "snli-ve", uid, (f"flickr30k-{image}",), text, fields))
    return examples
