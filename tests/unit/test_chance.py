"""The chance row: the prior or uniform-random predictor's metric, on hand-made val sets."""

from __future__ import annotations

from math import comb

import pytest
import torch

from lottery.data.examples import TaskExample
from lottery.evaluation.chance import chance_metrics
from lottery.evaluation.metrics import retrieval_recalls
from lottery.tasks.downstream.common import TaskContext


def _ctx(regions: dict[str, int] | None = None) -> TaskContext:
    regions = regions or {"a": 4, "b": 2}
    feats = {k: (torch.zeros(n, 3), torch.zeros(n, 7)) for k, n in regions.items()}
    return TaskContext(lambda text: [0], feats)


def _ex(task: str, uid: int, image: str = "a", text: str = "t", **fields) -> TaskExample:
    return TaskExample(task, str(uid), (image,), text, fields)


def test_vqa_chance_answers_the_train_splits_heaviest_answer_everywhere():
    train = [
        _ex("vqa", 0, answers={"2": 1.0}),
        _ex("vqa", 1, answers={"2": 1 / 3, "3": 1.0}),
        _ex("vqa", 2, answers={"2": 1.0}),
    ]
    val = [_ex("vqa", 3, answers={"2": 2 / 3}), _ex("vqa", 4, answers={"3": 1.0})]
    assert chance_metrics("vqa", train, val, _ctx()) == {"vqa_score": pytest.approx(1 / 3)}


@pytest.mark.parametrize(
    ("task", "field", "values"),
    [
        ("gqa", "answer", ["yes", "yes", "no"]),
        ("snli-ve", "label", ["entailment", "entailment", "neutral"]),
        ("nlvr2", "label", [True, True, False]),
    ],
)
def test_classification_chance_is_the_majority_train_label(task, field, values):
    train = [_ex(task, i, **{field: v}) for i, v in enumerate(values)]
    val = [
        _ex(task, 10 + i, **{field: v}) for i, v in enumerate([values[0], values[2], values[2], values[2]])
    ]
    assert chance_metrics(task, train, val, _ctx()) == {"accuracy": 0.25}


def test_choice_tasks_take_a_uniform_guess():
    vcr = [
        _ex("vcr", 0, answer_choices=["a"] * 4, rationale_choices=["r"] * 4),
        _ex("vcr", 1, answer_choices=["a"] * 2, rationale_choices=["r"] * 4),
    ]
    assert chance_metrics("vcr", vcr, vcr, _ctx()) == pytest.approx(
        {"q->a": (1 / 4 + 1 / 2) / 2, "qa->r": 1 / 4, "q->ar": (1 / 16 + 1 / 8) / 2}
    )
    refs = [_ex("refcoco+", 0, image="a", region=0), _ex("refcoco+", 1, image="b", region=1)]
    assert chance_metrics("refcoco+", refs, refs, _ctx()) == {"accuracy": pytest.approx((1 / 4 + 1 / 2) / 2)}


def test_retrieval_chance_is_a_uniformly_random_ranking_exactly():
    val = [_ex("retrieval", i, image=f"i{i % 10}", text=f"c{i}") for i in range(50)]
    result = chance_metrics("retrieval", val, val, _ctx())
    assert [result[f"txt2img_r{k}"] for k in (1, 5, 10)] == [0.1, 0.5, 1.0]
    # each image has 5 of the 50 captions: it misses iff the top k holds none of them
    img2txt = [1 - comb(50 - k, 5) / comb(50, 5) for k in (1, 5, 10)]  # 0.1, 0.4234, 0.6894
    assert [result[f"img2txt_r{k}"] for k in (1, 5, 10)] == pytest.approx(img2txt, abs=1e-12)
    assert result["mean_recall"] == pytest.approx((1.6 + sum(img2txt)) / 6, abs=1e-12)


def test_retrieval_chance_is_what_random_score_matrices_give_on_average():
    val = [_ex("retrieval", i, image=f"i{i % 4}", text=f"c{i}") for i in range(12)]
    exact = chance_metrics("retrieval", val, val, _ctx())
    generator = torch.Generator().manual_seed(0)
    draws = [
        retrieval_recalls(torch.rand(12, 4, generator=generator), [i % 4 for i in range(12)])
        for _ in range(400)
    ]
    for key, value in exact.items():
        assert sum(d[key] for d in draws) / len(draws) == pytest.approx(value, abs=0.02), key


def test_chance_needs_both_splits():
    with pytest.raises(ValueError, match="gqa: chance needs train and val"):
        chance_metrics("gqa", [], [_ex("gqa", 0, answer="yes")], _ctx())
