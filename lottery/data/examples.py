"""One example of a downstream task, whatever its source (the shapes world or a benchmark's annotations).

An example names the region-feature samples it reads by their shard keys (`images`: one, or two for
NLVR2), its text, and the task's own fields:

| task | `text` | `fields` |
| --- | --- | --- |
| vqa | the question | `answers`: {normalised answer: soft score min(1, #annotators who gave it / 3)} |
| gqa | the question | `answer`: str |
| vcr | the question | `answer_choices`, `rationale_choices`: 4 str each; `answer_label`, `rationale_label`: int |
| snli-ve | the hypothesis | `label`: "entailment" / "neutral" / "contradiction" |
| refcoco+ | the referring expression | `region`: int (shapes world) or `bbox`: [x, y, w, h] pixels + `image_size`: [w, h] |
| retrieval | one caption of the image | `caption_index`: int, the caption's position among its image's captions |
| nlvr2 | the statement | `label`: bool |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TASK_NAMES: tuple[str, ...] = ("vqa", "gqa", "vcr", "snli-ve", "refcoco+", "retrieval", "nlvr2")


@dataclass(frozen=True)
class TaskExample:
    """`uid` is unique within its task and split; `images` are keys of region-feature shard samples."""

    task: str
    uid: str
    images: tuple[str, ...]
    text: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASK_NAMES)}")
        if not self.images or any(not key or "." in key for key in self.images):
            raise ValueError(
                f"example {self.uid}: image keys must be non-empty and without '.', got {self.images}"
            )
