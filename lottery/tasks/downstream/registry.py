"""The adapter of each downstream task, by name."""

from __future__ import annotations

from lottery.data.examples import TASK_NAMES
from lottery.tasks.downstream.choices import Retrieval, Vcr
from lottery.tasks.downstream.classify import Classify
from lottery.tasks.downstream.common import Adapter
from lottery.tasks.downstream.pairs import ImagePairs
from lottery.tasks.downstream.regions import ReferringExpressions

ADAPTERS: dict[str, Adapter] = {
    "vqa": Classify("vqa"),
    "gqa": Classify("gqa"),
    "snli-ve": Classify("snli-ve"),
    "vcr": Vcr(),
    "retrieval": Retrieval(),
    "refcoco+": ReferringExpressions(),
    "nlvr2": ImagePairs(),
}
assert set(ADAPTERS) == set(TASK_NAMES)


def adapter(task: str) -> Adapter:
    if task not in ADAPTERS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[task]
