"""VQA v2: the official questions and annotations JSON files, joined by question id.

`v2_OpenEnded_mscoco_<split>_questions.json` holds `{"questions": [{image_id, question, question_id}]}`
and `v2_mscoco_<split>_annotations.json` holds `{"annotations": [{question_id, image_id, answers: 10 x
{answer, answer_confidence, answer_id}, multiple_choice_answer, answer_type, question_type}]}`. The
test splits have no annotations file; their examples carry no `answers`.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    require_text,
)
from lottery.data.annotations.vqa_answers import soft_scores
from lottery.data.examples import TaskExample

ANSWER_CONFIDENCES = ("yes", "maybe", "no")


def parse_vqa(questions: Path, annotations: Path | None) -> list[TaskExample]:
    """One example per question, in the questions file's order, keyed `coco-<image_id>`.

    `fields["answers"]` is {normalised answer: min(1, count / 3)} over the ten annotators and
    `fields["answer_type"]` is "yes/no", "number" or "other", the breakdown VQA reports.
    """
    questions, annotations = Path(questions), None if annotations is None else Path(annotations)
    labels = None if annotations is None else _annotations_by_question(annotations)
    examples, seen = [], {}
    for at, record in json_records(read_json(questions), questions, "questions"):
        question_id = require(record, "question_id", int, at)
        image_id = require(record, "image_id", int, at)
        text = require_text(record, "question", at)
        uid = str(question_id)
        claim_uid(seen, uid, at)
        fields: dict[str, Any] = {}
        if labels is not None:
            if question_id not in labels:
                raise at.error(
                    f"question {question_id} has no annotation in {annotations}; are both files of the same split?"
                )
            label_at, label = labels[question_id]
            if label["image_id"] != image_id:
                raise at.error(
                    f"question {question_id} is about image {image_id} here but image {label['image_id']} "
                    f"at {label_at}; are both files of the same split?"
                )
            fields = {"answers": label["answers"], "answer_type": label["answer_type"]}
        examples.append(make_example(at, "vqa", uid, (f"coco-{image_id}",), text, fields))
    return examples


def _annotations_by_question(path: Path) -> dict[int, tuple[At, dict[str, Any]]]:
    """{question_id: (location, {image_id, answers, answer_type})} with the answers already scored."""
    by_question: dict[int, tuple[At, dict[str, Any]]] = {}
    for at, record in json_records(read_json(path), path, "annotations"):
        question_id = require(record, "question_id", int, at)
        if question_id in by_question:
            raise at.error(
                f"second annotation of question {question_id}, first at {by_question[question_id][0]}"
            )
        answers = _answers(require(record, "answers", list, at), at.inner("answers"))
        label = {
            "image_id": require(record, "image_id", int, at),
            "answers": soft_scores(answers),
            "answer_type": require(record, "answer_type", str, at),
        }
        by_question[question_id] = (at, label)
    return by_question


def _answers(items: Sequence[Any], at: At) -> list[str]:
    if not items:
        raise at.error("no answers")
    answers = []
    for i, item in enumerate(items):
        item_at = at.inner(f"[{i}]")
        answer = require_object(item, item_at, "an answer")
        confidence = require(answer, "answer_confidence", str, item_at)
        if confidence not in ANSWER_CONFIDENCES:
            raise item_at.error(
                f"answer_confidence {confidence!r} is not one of {', '.join(ANSWER_CONFIDENCES)}"
            )
        answers.append(require(answer, "answer", str, item_at))
    return answers
