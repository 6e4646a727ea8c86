"""NLVR2: `data/{train,dev,test1}.json`, JSON Lines of statements about a pair of images.

An identifier `<split>-<set>-<pair>-<sentence>` names its images by dropping the sentence number:
`train-10171-0-0` reads `train-10171-0-img0` and `train-10171-0-img1`, the stems of the released
image files.
"""

from __future__ import annotations

import re
from pathlib import Path

from lottery.data.annotations.errors import claim_uid, make_example, read_jsonl, require_text
from lottery.data.examples import TaskExample

LABELS = {"True": True, "False": False}
_IDENTIFIER = re.compile(r"(?P<pair>.+)-\d+")


def parse_nlvr2(path: Path) -> list[TaskExample]:
    """One example per line, uid the identifier; `fields["label"]` is whether the statement is true."""
    path = Path(path)
    examples, seen = [], {}
    for at, record in read_jsonl(path):
        identifier = require_text(record, "identifier", at)
        match = _IDENTIFIER.fullmatch(identifier)
        if match is None:
            raise at.error(f"identifier {identifier!r} does not end in -<sentence number>")
        label = require_text(record, "label", at)
        if label not in LABELS:
            raise at.error(f"label {label!r} is not 'True' or 'False'")
        text = require_text(record, "sentence", at)
        claim_uid(seen, identifier, at)
        images = (f"{match['pair']}-img0", f"{match['pair']}-img1")
        examples.append(make_example(at, "nlvr2", identifier, images, text, {"label": LABELS[label]}))
    return examples
