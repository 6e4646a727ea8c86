"""The shapes-world versions of the seven tasks: true of their scenes, deterministic, written once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lottery.data.examples import TASK_NAMES
from lottery.data.pipeline import eval_batches, shard_urls
from lottery.data.shapes_tasks import contradiction
from lottery.data.task_sets import generate, shapes_scenes, write_task
from lottery.data.world import Obj, Scene


@pytest.fixture(scope="module")
def val_scenes(shapes_dir):
    return dict(shapes_scenes(shapes_dir, "val"))


def test_regenerated_scenes_are_the_scenes_in_the_shards(shapes_dir, mini_model_dir, val_scenes):
    batch = next(
        iter(
            eval_batches(
                shard_urls(shapes_dir, "val"), tokenizer_dir=mini_model_dir, max_text_len=60, batch_size=8
            )
        )
    )
    for example in batch:
        assert val_scenes[example.key].to_json() == example.meta["scene"]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_task_is_deterministic_and_names_real_scenes(shapes_dir, val_scenes, task):
    examples = generate(task, shapes_dir, "val", seed=3)
    assert examples and examples == generate(task, shapes_dir, "val", seed=3)
    assert examples != generate(task, shapes_dir, "val", seed=4)
    assert len({e.uid for e in examples}) == len(examples)
    assert all(key in val_scenes for e in examples for key in e.images)


def test_vqa_answers_are_soft_scores_around_the_truth(shapes_dir, val_scenes):
    for example in generate("vqa", shapes_dir, "val"):
        answers = example.fields["answers"]
        assert all(0 < score <= 1 for score in answers.values())
        assert (
            max(answers, key=answers.get) == example.fields["truth"] or answers[example.fields["truth"]] > 0.3
        )
        if example.text.startswith("how many") and "objects" in example.text:
            colour = example.text.split()[2]
            count = sum(o.colour == colour for o in val_scenes[example.images[0]].objects)
            assert example.fields["truth"] == str(count)


def test_gqa_yes_no_questions_are_true_of_the_scene(shapes_dir, val_scenes):
    checked = 0
    for example in generate("gqa", shapes_dir, "val"):
        if example.text.startswith("is "):
            checked += 1
            assert example.fields["answer"] in ("yes", "no")
    assert checked > 10


def test_refcoco_expressions_name_an_existing_region(shapes_dir, val_scenes):
    for example in generate("refcoco+", shapes_dir, "val"):
        scene = val_scenes[example.images[0]]
        target = scene.objects[example.fields["region"]]
        assert target.shape in example.text and target.colour in example.text
        assert not any(word in example.text.split() for word in ("leftmost", "top", "bottom", "corner"))


def test_vcr_has_four_choices_and_the_right_rationale_holds(shapes_dir, val_scenes):
    for example in generate("vcr", shapes_dir, "val"):
        fields = example.fields
        assert len(fields["answer_choices"]) == len(set(fields["answer_choices"])) == 4
        assert len(fields["rationale_choices"]) == 4
        right = fields["rationale_choices"][fields["rationale_label"]]
        assert right.startswith(f"the {fields['answer_choices'][fields['answer_label']]} is ")


def test_snli_ve_gives_one_hypothesis_per_label_and_nlvr2_is_balanced(shapes_dir):
    labels = [e.fields["label"] for e in generate("snli-ve", shapes_dir, "val")]
    assert labels.count("entailment") == labels.count("neutral") == labels.count("contradiction")
    truths = [e.fields["label"] for e in generate("nlvr2", shapes_dir, "val")]
    assert 0.3 < sum(truths) / len(truths) < 0.7


def testcontradictions_name_a_missing_object_or_reverse_the_relation(shapes_dir, val_scenes):
    alone = Scene((Obj("circle", "red", "small", (0.1, 0.1, 0.2, 0.2)),))
    for seed in range(20):
        words = contradiction(alone, np.random.default_rng(seed)).split()
        assert words[:2] == ["there", "is"] and (words[3], words[4]) != ("red", "circle")
    pair = Scene(
        (
            Obj("circle", "red", "small", (0.1, 0.1, 0.2, 0.2)),
            Obj("star", "blue", "small", (0.6, 0.1, 0.7, 0.2)),
        )
    )
    for seed in range(20):
        text = contradiction(pair, np.random.default_rng(seed))
        left_first = text.index("red") < text.index("blue")
        assert ("right of" if left_first else "left of") in text, text


def test_write_task_writes_splits_answers_and_meta_once(shapes_dir):
    out = write_task("vqa", shapes_dir)
    meta = json.loads((out / "meta.json").read_text())
    lines = (out / "val.jsonl").read_text().splitlines()
    assert meta["counts"]["val"] == len(lines) and json.loads(lines[0])["images"]
    answers = json.loads((out / "answers.json").read_text())
    assert "yes" in answers and answers == sorted(answers)
    stamp = (out / "meta.json").stat().st_mtime_ns
    assert write_task("vqa", shapes_dir) == out and (out / "meta.json").stat().st_mtime_ns == stamp


def test_features_are_read_from_the_shards_holding_the_wanted_scenes_only(shapes_dir):
    from lottery.tasks.downstream.features import shards_holding

    every = shards_holding(shapes_dir, "train", {"train-00000000", "train-00000300"})
    assert [u.rsplit("/", 1)[-1] for u in every] == ["train-000000.tar", "train-000002.tar"]  # 128 per shard
    assert len(shards_holding(shapes_dir, "train", {"not-a-shapes-key"})) == 4
