"""NLVR2: the statement with each of its two images (two passes), pooled outputs joined, true / false.

This is UNITER's "pair" setup: both passes share the transformer; the head reads [pooled_left;
pooled_right] (2H) and predicts the label with cross-entropy; a prediction is every label tied for
the best logit (both, for a constant model: accuracy 0.5, not the share of false statements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lottery.data.examples import TaskExample
from lottery.evaluation.metrics import accuracy
from lottery.evaluation.ties import Tied, tied_argmax
from lottery.tasks.downstream.common import Batch, TaskContext, encode, pack_pairs, stats


@dataclass(frozen=True)
class ImagePairs:
    name: str = "nlvr2"

    def collate(self, examples: Sequence[TaskExample], ctx: TaskContext, generator: torch.Generator) -> Batch:
        ids = [ctx.ids(e.text) for e in examples for _ in range(2)]
        keys = [key for e in examples for key in e.images[:2]]
        batch = pack_pairs(ctx, ids, keys)  # rows 2i and 2i+1: example i with its left and right image
        batch["targets"] = torch.tensor([int(bool(e.fields["label"])) for e in examples])
        return batch

    def outputs(self, model: nn.Module, batch: Batch) -> Tensor:
        pooled = model.pooled(encode(model, batch))
        return model.head(pooled.reshape(len(batch["targets"]), -1)).float()

    def loss_from(self, logits: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(logits, batch["targets"])

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        loss = self.loss_from(self.outputs(model, batch), batch)
        return loss, stats(loss, len(batch["targets"]))

    def predict(self, model: nn.Module, batch: Batch, ctx: TaskContext) -> list[Tied]:
        return tied_argmax(self.outputs(model, batch), (False, True))

    def metric(self, predictions: Sequence[Tied | bool], examples: Sequence[TaskExample]) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, [bool(e.fields["label"]) for e in examples])}
