"""Task datasets on the shapes world: `<scenes>/tasks/<task>/{train,val}.jsonl`, answers and meta.json.

The examples name the scenes' shard keys; the scenes are regenerated from the shards' own config
(each scene is the first draw of its sample's rng, see `lottery.data.shards.make_sample`), so building
a task reads no shard. `meta.json` is written last: a directory without it is an unfinished build.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lottery.data import shapes_tasks
from lottery.data.examples import TASK_NAMES, TaskExample
from lottery.data.shards import SPLIT_IDS, ShapesConfig
from lottery.data.world import Scene, generate_scene
from lottery.files import write_text_atomic

# tasks whose head is a classifier over an answer vocabulary built from the train split
ANSWER_FIELD = {"vqa": "answers", "gqa": "answer"}


def shapes_scenes(scenes_dir: Path, split: str) -> Iterator[tuple[str, Scene]]:
    """(shard key, scene) of every sample of a split, in order, without reading the shards."""
    meta_path = Path(scenes_dir) / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} is missing: build the scenes first (`lottery data shapes --out DIR`)"
        )
    config = ShapesConfig(**json.loads(meta_path.read_text())["config"])
    for index in range(config.count(split)):
        rng = np.random.default_rng([config.seed, SPLIT_IDS[split], index])
        yield f"{split}-{index:08d}", generate_scene(rng, config.scene)


def generate(task: str, scenes_dir: Path, split: str, seed: int = 0) -> list[TaskExample]:
    """Every example of `task` on the split's scenes; deterministic in (seed, task, split)."""
    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_NAMES)}")
    scenes = list(shapes_scenes(scenes_dir, split))
    examples: list[TaskExample] = []
    task_id = TASK_NAMES.index(task)
    if task == "nlvr2":
        for index in range(0, len(scenes) - 1, 2):
            (left_key, left), (right_key, right) = scenes[index], scenes[index + 1]
            rng = np.random.default_rng([seed, task_id, SPLIT_IDS[split], index])
            examples += shapes_tasks.nlvr2(left, right, (left_key, right_key), rng)
        return examples
    make = {
        "vqa": shapes_tasks.vqa,
        "gqa": shapes_tasks.gqa,
        "vcr": shapes_tasks.vcr,
        "snli-ve": shapes_tasks.snli_ve,
        "refcoco+": shapes_tasks.refcoco,
        "retrieval": shapes_tasks.retrieval,
    }[task]
    for index, (key, scene) in enumerate(scenes):
        examples += make(scene, key, np.random.default_rng([seed, task_id, SPLIT_IDS[split], index]))
    return examples


def answer_vocab(task: str, examples: list[TaskExample]) -> list[str]:
    """The classifier's answers: every answer of the train split, sorted (VQA: any annotator's)."""
    field = ANSWER_FIELD[task]
    answers: set[str] = set()
    for example in examples:
        value = example.fields[field]
        answers.update(value if isinstance(value, dict) else [value])
    return sorted(answers)


def example_line(example: TaskExample) -> str:
    return json.dumps(
        {
            "uid": example.uid,
            "images": list(example.images),
            "text": example.text,
            "fields": dict(example.fields),
        },
        sort_keys=True,
    )


def write_task(task: str, scenes_dir: Path, seed: int = 0) -> Path:
    """Build `<scenes_dir>/tasks/<task>/` once; returns it. A finished directory is left as it is."""
    out = Path(scenes_dir) / "tasks" / task
    if (out / "meta.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLIT_IDS:
        examples = generate(task, scenes_dir, split, seed)
        counts[split] = len(examples)
        write_text_atomic(out / f"{split}.jsonl", "".join(example_line(e) + "\n" for e in examples))
        if split == "train" and task in ANSWER_FIELD:
            write_text_atomic(out / "answers.json", json.dumps(answer_vocab(task, examples)))
    meta = {
        "task": task,
        "source": "shapes",
        "scenes": str(Path(scenes_dir).resolve()),
        "seed": seed,
        "counts": counts,
    }
    write_text_atomic(out / "meta.json", json.dumps(meta, indent=2))
    return out
