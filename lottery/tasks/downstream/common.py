"""What every downstream adapter shares: the batch context, packing text with regions, encoding, stats.

An adapter turns `TaskExample`s into tensors (`collate`), tensors into a loss (`loss`, called by the
model's forward so ZeRO-3 sees one module call) and into per-example predictions (`predict`), and
predictions into the benchmark's metric (`metric`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lottery.data.examples import TaskExample
from lottery.tasks.packing import pack

Batch = dict[str, Tensor]
MODEL_INPUTS = ("input_ids", "position_ids", "img_feat", "img_pos_feat", "attn_masks", "gather_index")
PERTURBATIONS = ("txt_delta", "img_delta")  # set by adversarial training


@dataclass(frozen=True)
class TaskContext:
    """`tokenize(text)` gives `[CLS] ... [SEP]` ids; `features[key]` the (feat (N, D), box (N, 7)) of an image."""

    tokenize: Callable[[str], list[int]]
    features: Mapping[str, tuple[Tensor, Tensor]]
    answers: Sequence[str] = ()  # the classifier's answer vocabulary (VQA, GQA)
    negatives: int = 3  # retrieval: other images scored against each caption in training
    max_text_len: int = 60
    extra: Mapping[str, Any] = field(default_factory=dict)

    def ids(self, *texts: str) -> list[int]:
        """`[CLS] a [SEP] b [SEP] ...`: the texts joined as UNITER joins a question and an answer."""
        joined = self.tokenize(texts[0])
        for text in texts[1:]:
            joined += self.tokenize(text)[1:]
        return joined[: self.max_text_len]

    def image(self, key: str) -> tuple[Tensor, Tensor]:
        if key not in self.features:
            raise KeyError(f"no region features for image {key!r} (is it in the shards the task reads?)")
        return self.features[key]


def pack_pairs(ctx: TaskContext, ids: Sequence[list[int]], keys: Sequence[str]) -> Batch:
    """One packed sequence per (text ids, image key) pair, with the lengths the region heads need."""
    feats, boxes = zip(*(ctx.image(key) for key in keys), strict=True)
    batch = pack(
        [torch.as_tensor(i, dtype=torch.long) for i in ids],
        [f.float() for f in feats],
        [b.float() for b in boxes],
    )
    batch["txt_lens"] = torch.tensor([len(i) for i in ids])
    batch["num_regions"] = torch.tensor([len(f) for f in feats])
    return batch


def encode(model: nn.Module, batch: Batch) -> Tensor:
    """The packed (B, L, H) outputs of any family's task model (`encode_packed`)."""
    return model.encode_packed(batch)


def stats(loss: Tensor, count: int) -> dict[str, float]:
    return {"loss_sum": float(loss.detach()) * count, "count": float(count)}


class Adapter(Protocol):
    name: str

    def collate(
        self, examples: Sequence[TaskExample], ctx: TaskContext, generator: torch.Generator
    ) -> Batch: ...

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]: ...

    def outputs(self, model: nn.Module, batch: Batch) -> Tensor: ...

    def loss_from(self, outputs: Tensor, batch: Batch) -> Tensor: ...

    def predict(self, model: nn.Module, batch: Batch, ctx: TaskContext) -> list[Any]: ...

    def metric(self, predictions: Sequence[Any], examples: Sequence[TaskExample]) -> dict[str, float]: ...
