"""VQA, GQA and SNLI-VE: a classifier over the pooled output of one (text, image) pair.

VQA trains on the annotators' soft scores with binary cross-entropy (scaled by the number of answers,
as UNITER does) and is scored by the VQA score; GQA and SNLI-VE use cross-entropy and accuracy. An
answer outside the train vocabulary cannot be predicted: it is ignored by the loss and counts as wrong.
A prediction is every answer tied for the best logit, which the metric scores at its expectation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lottery.data.examples import TaskExample
from lottery.evaluation.metrics import accuracy, vqa_score
from lottery.evaluation.ties import Tied, tied_argmax
from lottery.tasks.downstream.common import Batch, TaskContext, encode, pack_pairs, stats

SNLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class Classify:
    name: str  # vqa, gqa or snli-ve

    def labels(self, ctx: TaskContext) -> Sequence[str]:
        return SNLI_LABELS if self.name == "snli-ve" else ctx.answers

    def collate(self, examples: Sequence[TaskExample], ctx: TaskContext, generator: torch.Generator) -> Batch:
        batch = pack_pairs(ctx, [ctx.ids(e.text) for e in examples], [e.images[0] for e in examples])
        labels = self.labels(ctx)
        index = {answer: i for i, answer in enumerate(labels)}
        if self.name == "vqa":
            targets = torch.zeros(len(examples), len(labels))
            for row, example in enumerate(examples):
                for answer, score in example.fields["answers"].items():
                    if answer in index:
                        targets[row, index[answer]] = score
        else:
            key = "label" if self.name == "snli-ve" else "answer"
            targets = torch.tensor([index.get(e.fields[key], -100) for e in examples])
        batch["targets"] = targets
        return batch

    def outputs(self, model: nn.Module, batch: Batch) -> Tensor:
        return model.head(model.pooled(encode(model, batch)))

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        loss = self.loss_from(self.outputs(model, batch), batch)
        return loss, stats(loss, len(batch["targets"]))

    def loss_from(self, logits: Tensor, batch: Batch) -> Tensor:
        targets = batch["targets"]
        if self.name == "vqa":
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float()) * targets.size(1)
        elif (targets >= 0).any():
            loss = F.cross_entropy(logits.float(), targets, ignore_index=-100)
        else:
            loss = logits.sum() * 0.0  # no answer of this batch is in the vocabulary
        return loss

    def predict(self, model: nn.Module, batch: Batch, ctx: TaskContext) -> list[Tied]:
        return tied_argmax(self.outputs(model, batch), self.labels(ctx))

    def metric(self, predictions: Sequence[Tied | str], examples: Sequence[TaskExample]) -> dict[str, float]:
        if self.name == "vqa":
            return {"vqa_score": vqa_score(predictions, [e.fields["answers"] for e in examples])}
        key = "label" if self.name == "snli-ve" else "answer"
        return {"accuracy": accuracy(predictions, [e.fields[key] for e in examples])}
