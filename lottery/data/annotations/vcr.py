"""VCR: `{train,val,test}.jsonl`, multiple-choice questions whose tokens may point at detected objects.

A token is a word or a list of indices into the record's `objects` (category names), e.g. `[0, 1]` for
"these two people". We render it as names with their index, `person0 and person1`, so the text reads
as a sentence and tells two people apart, and keep in `fields` which objects each text mentions so a
model can later tie them to their regions. The test file has no labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lottery.data.annotations.errors import At, claim_uid, make_example, read_jsonl, require, require_text
from lottery.data.examples import TaskExample

CHOICES = 4


def vcr_image_key(img_fn: str) -> str:
    """The shard key of a VCR image: `vcr-` + its path without `.jpg`, '/' as '-' and '.' as '_'.

    `lsmdc_3001_21_JUMP_STREET/3001_21_JUMP_STREET_00.02.37.152-00.02.40.074@0.jpg` ->
    `vcr-lsmdc_3001_21_JUMP_STREET-3001_21_JUMP_STREET_00_02_37_152-00_02_40_074@0`; whatever writes
    VCR's region-feature shards must name them with this function.
    """
    path = img_fn.replace("\\", "/").removesuffix(".jpg")
    return "vcr-" + path.replace("/", "-").replace(".", "_")


def parse_vcr(path: Path, require_labels: bool = True) -> list[TaskExample]:
    """One example per line, uid the annot_id; `text` is the question.

    `fields`: `answer_choices` and `rationale_choices` (4 rendered str each), `answer_label` and
    `rationale_label` (0..3; absent when the record has none and `require_labels` is False), and
    `question_objects` (sorted object indices), `answer_objects` and `rationale_objects` (one sorted
    list per choice).
    """
    path = Path(path)
    examples, seen = [], {}
    for at, record in read_jsonl(path):
        uid = require_text(record, "annot_id", at)
        objects = require(record, "objects", list, at)
        if not all(isinstance(name, str) and name for name in objects):
            raise at.error("'objects' must be a list of category names")
        question, question_objects = _render(
            require(record, "question", list, at), objects, at.inner("question")
        )
        fields: dict[str, Any] = {"question_objects": question_objects}
        for kind in ("answer", "rationale"):
            choices = require(record, f"{kind}_choices", list, at)
            if len(choices) != CHOICES:
                raise at.error(f"'{kind}_choices' has {len(choices)} choices, VCR has {CHOICES}")
            rendered = [_render(c, objects, at.inner(f"{kind}_choices[{i}]")) for i, c in enumerate(choices)]
            fields[f"{kind}_choices"] = [text for text, _ in rendered]
            fields[f"{kind}_objects"] = [mentioned for _, mentioned in rendered]
            if require_labels or f"{kind}_label" in record:
                fields[f"{kind}_label"] = _label(record, f"{kind}_label", at)
        claim_uid(seen, uid, at)
        image = vcr_image_key(require_text(record, "img_fn", at))
        examples.append(make_example(at, "vcr", uid, (image,), question, fields))
    return examples


def _render(tokens: Any, objects: Sequence[str], at: At) -> tuple[str, list[int]]:
    """(the tokens as one string, the sorted indices of the objects they mention)."""
    if not isinstance(tokens, list):
        raise at.error(f"must be a list of tokens, got {type(tokens).__name__}")
    words, mentioned = [], set()
    for token in tokens:
        if isinstance(token, str):
            words.append(token)
            continue
        if not isinstance(token, list) or not token or not all(type(i) is int for i in token):
            raise at.error(f"token {token!r} is neither a word nor a non-empty list of object indices")
        if not all(0 <= i < len(objects) for i in token):
            raise at.error(f"token {token!r} points past the {len(objects)} objects")
        names = [f"{objects[i]}{i}" for i in token]
        words.append(names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}")
        mentioned.update(token)
    text = " ".join(w for w in words if w.strip())
    if not text:
        raise at.error("is empty")
    return text, sorted(mentioned)


def _label(record: Mapping[str, Any], key: str, at: At) -> int:
    label = require(record, key, int, at)
    if not 0 <= label < CHOICES:
        raise at.error(f"{key!r} is {label}, not in 0..{CHOICES - 1}")
    return label
