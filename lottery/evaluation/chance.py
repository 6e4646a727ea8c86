"""What a task's metric gives without looking at the image or the text: the floor a fine-tune must beat.

Classification tasks (VQA, GQA, SNLI-VE, NLVR2) take the train split's prior: the most frequent answer
(VQA: the largest summed soft score) given to every val question, which is stronger than a uniform guess
on a skewed answer set such as GQA's yes/no questions. Choice tasks (VCR, RefCOCO+, retrieval) take a
uniform random choice, computed exactly: for retrieval, as the metric of a constant score matrix, which
the metric scores as a uniformly random ranking (ties at their expectation). Without this row a score
means nothing: 0.77 on the shapes GQA is chance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from lottery.data.examples import TaskExample
from lottery.evaluation.metrics import accuracy, retrieval_recalls, vqa_score
from lottery.tasks.downstream.common import TaskContext

_LABEL_FIELD = {"gqa": "answer", "snli-ve": "label", "nlvr2": "label"}


def _prior(task: str, train: Sequence[TaskExample]):
    if task == "vqa":
        totals: Counter = Counter()
        for example in train:
            totals.update(example.fields["answers"])
        return totals.most_common(1)[0][0]
    field = _LABEL_FIELD[task]
    value = Counter(example.fields[field] for example in train).most_common(1)[0][0]
    return bool(value) if task == "nlvr2" else value


def chance_metrics(
    task: str,
    train: Sequence[TaskExample],
    val: Sequence[TaskExample],
    ctx: TaskContext,
) -> dict[str, float]:
    """The metrics (same keys as the task's own) of the prior or uniform-random predictor on `val`."""
    if not train or not val:
        raise ValueError(f"{task}: chance needs train and val examples ({len(train)} / {len(val)})")
    if task == "vqa":
        answer = _prior(task, train)
        return {"vqa_score": vqa_score([answer] * len(val), [e.fields["answers"] for e in val])}
    if task in _LABEL_FIELD:
        answer = _prior(task, train)
        gold = [e.fields[_LABEL_FIELD[task]] for e in val]
        gold = [bool(g) for g in gold] if task == "nlvr2" else gold
        return {"accuracy": accuracy([answer] * len(val), gold)}
    if task == "vcr":
        q_a = sum(1 / len(e.fields["answer_choices"]) for e in val) / len(val)
        qa_r = sum(1 / len(e.fields["rationale_choices"]) for e in val) / len(val)
        both = sum(1 / (len(e.fields["answer_choices"]) * len(e.fields["rationale_choices"])) for e in val)
        return {"q->a": q_a, "qa->r": qa_r, "q->ar": both / len(val)}
    if task == "refcoco+":
        return {"accuracy": sum(1 / len(ctx.image(e.images[0])[1]) for e in val) / len(val)}
    if task == "retrieval":
        images = sorted({e.images[0] for e in val})
        position = {key: i for i, key in enumerate(images)}
        caption_image = [position[e.images[0]] for e in val]
        return retrieval_recalls(torch.zeros(len(val), len(images)), caption_image)
    raise ValueError(f"no chance predictor for task {task!r}")
