"""GQA: a balanced questions JSON file, `{question_id: {imageId, question, answer, fullAnswer, ...}}`.

The test and challenge files (`testdev` aside) carry no answers; they parse only when the caller says
answers are not required, so a training file that lost its answers cannot pass unnoticed.
"""

from __future__ import annotations

from pathlib import Path

from lottery.data.annotations.errors import At, make_example, read_json, require_object, require_text
from lottery.data.examples import TaskExample


def parse_gqa(questions: Path, require_answers: bool = True) -> list[TaskExample]:
    """One example per question in file order, uid the question id (unique: it is the object's key),
    image key `gqa-<imageId>`.

    `fields["answer"]` is the short answer; it is absent when the record has none and
    `require_answers` is False.
    """
    path = Path(questions)
    content = require_object(read_json(path), At(path), "the file")
    examples = []
    for question_id, item in content.items():
        at = At(path, record=f"[{question_id!r}]")
        record = require_object(item, at, "a question")
        image_id = require_text(record, "imageId", at)
        text = require_text(record, "question", at)
        fields = {}
        if require_answers or "answer" in record:
            fields["answer"] = require_text(record, "answer", at)
        examples.append(make_example(at, "gqa", question_id, (f"gqa-{image_id}",), text, fields))
    return examples
