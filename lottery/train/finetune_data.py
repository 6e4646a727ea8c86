"""What a fine-tune reads: the task's examples (shapes world, built once), its answers and the features.

Rank 0 builds the task dataset when it is missing; every rank then reads the same JSONL files and the
region features of the images its examples name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from lottery import dist
from lottery.config import FinetuneData
from lottery.data.examples import TaskExample
from lottery.data.patches import PatchGrid
from lottery.tasks.downstream.features import load_features


@dataclass
class TaskData:
    train: list[TaskExample]
    val: list[TaskExample]
    answers: tuple[str, ...]
    features: dict[str, tuple[Tensor, Tensor]]
    directory: Path


def read_examples(path: Path, task: str) -> list[TaskExample]:
    """A task JSONL file as examples; a bad line names the file and the line."""
    examples = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            examples.append(
                TaskExample(task, record["uid"], tuple(record["images"]), record["text"], record["fields"])
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}:{number}: not a {task} example ({err})") from None
    return examples


def _subset(examples: list[TaskExample], count: int, seed: int) -> list[TaskExample]:
    order = np.random.default_rng(seed).permutation(len(examples))
    return [examples[i] for i in order[: count or len(examples)]]


def _retrieval_val(examples: list[TaskExample], images: int) -> list[TaskExample]:
    """Every caption of the first `images` val images: the evaluation grid."""
    keep = sorted({e.images[0] for e in examples})[:images]
    return [e for e in examples if e.images[0] in set(keep)]


def prepare_task_data(
    task: str, scenes_dir: Path, tokenizer_dir: Path, data: FinetuneData, patches: PatchGrid | None = None
) -> TaskData:
    """Collective: build the task dataset once (rank 0), then read examples and features on every rank
    (with `patches`, a patch model's: each image's patches in the place of its regions)."""
    from lottery.data.task_sets import write_task

    directory = Path(scenes_dir) / "tasks" / task
    if dist.is_main():
        write_task(task, scenes_dir, seed=data.seed)
    dist.barrier()
    train = read_examples(directory / "train.jsonl", task)
    if data.train_images:
        allowed = set(sorted({k for e in train for k in e.images})[: data.train_images])
        train = [e for e in train if all(k in allowed for k in e.images)]
    train = _subset(train, data.train_examples, data.seed)
    every_val = read_examples(directory / "val.jsonl", task)
    if task == "retrieval":
        val = _retrieval_val(every_val, data.val_images)
    else:
        val = _subset(every_val, data.val_examples, data.seed + 1)
    answers_path = directory / "answers.json"
    answers = tuple(json.loads(answers_path.read_text())) if answers_path.is_file() else ()
    features = load_features(
        scenes_dir, "train", {k for e in train for k in e.images}, tokenizer_dir, patches
    )
    features.update(
        load_features(scenes_dir, "val", {k for e in val for k in e.images}, tokenizer_dir, patches)
    )
    return TaskData(train, val, answers, features, directory)
