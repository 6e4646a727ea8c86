"""VCR and image-text retrieval: one score per (text, image) candidate, cross-entropy over the candidates.

VCR scores the four answers to a question (Q->A) and the four rationales given the right answer
(QA->R), each candidate as `[CLS] question [SEP] candidate [SEP]` with the image, as UNITER does.
Retrieval trains like ITM with in-batch negatives (each caption against its image and `negatives`
other images of the batch) and is evaluated on the full caption x image score matrix (R@1/5/10).
Both score ties at their expectation under random tie-breaking (`metrics.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lottery.data.examples import TaskExample
from lottery.evaluation.metrics import retrieval_recalls, vcr_accuracies
from lottery.evaluation.ties import Tied, tied_argmax
from lottery.tasks.downstream.common import Batch, TaskContext, encode, pack_pairs, stats


def scores(model: nn.Module, batch: Batch) -> Tensor:
    return model.head(model.pooled(encode(model, batch))).squeeze(-1)


@dataclass(frozen=True)
class Vcr:
    name: str = "vcr"

    def collate(self, examples: Sequence[TaskExample], ctx: TaskContext, generator: torch.Generator) -> Batch:
        ids, keys = [], []
        for e in examples:
            answers, rationales = e.fields["answer_choices"], e.fields["rationale_choices"]
            right = answers[e.fields["answer_label"]]
            ids += [ctx.ids(e.text, a) for a in answers] + [ctx.ids(e.text, right, r) for r in rationales]
            keys += [e.images[0]] * (len(answers) + len(rationales))
        batch = pack_pairs(ctx, ids, keys)
        batch["answer_label"] = torch.tensor([e.fields["answer_label"] for e in examples])
        batch["rationale_label"] = torch.tensor([e.fields["rationale_label"] for e in examples])
        return batch

    def outputs(self, model: nn.Module, batch: Batch) -> Tensor:
        """(B, 2, 4): the four answers' scores, then the four rationales'."""
        return scores(model, batch).float().view(len(batch["answer_label"]), 2, 4)

    def loss_from(self, grouped: Tensor, batch: Batch) -> Tensor:
        answer, rationale = grouped[:, 0], grouped[:, 1]
        return F.cross_entropy(answer, batch["answer_label"]) + F.cross_entropy(
            rationale, batch["rationale_label"]
        )

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        loss = self.loss_from(self.outputs(model, batch), batch)
        return loss, stats(loss, len(batch["answer_label"]))

    def predict(self, model: nn.Module, batch: Batch, ctx: TaskContext) -> list[tuple[Tied, Tied]]:
        """(tied answers, tied rationales) per question."""
        grouped = self.outputs(model, batch)
        return list(zip(tied_argmax(grouped[:, 0]), tied_argmax(grouped[:, 1]), strict=True))

    def metric(
        self, predictions: Sequence[tuple[Tied | int, Tied | int]], examples: Sequence[TaskExample]
    ) -> dict[str, float]:
        return vcr_accuracies(
            [p[0] for p in predictions],
            [e.fields["answer_label"] for e in examples],
            [p[1] for p in predictions],
            [e.fields["rationale_label"] for e in examples],
        )


@dataclass(frozen=True)
class Retrieval:
    name: str = "retrieval"

    def collate(self, examples: Sequence[TaskExample], ctx: TaskContext, generator: torch.Generator) -> Batch:
        """Each caption with its image first, then `ctx.negatives` other images of the batch."""
        images = sorted({e.images[0] for e in examples})
        ids, keys = [], []
        for e in examples:
            others = [k for k in images if k != e.images[0]]
            if len(others) < ctx.negatives:
                raise ValueError(
                    f"retrieval: a batch needs more than {ctx.negatives} images for its negatives, got {len(images)}"
                )
            picked = torch.randperm(len(others), generator=generator)[: ctx.negatives].tolist()
            ids += [ctx.ids(e.text)] * (1 + ctx.negatives)
            keys += [e.images[0], *(others[i] for i in picked)]
        batch = pack_pairs(ctx, ids, keys)
        batch["candidates"] = torch.tensor([1 + ctx.negatives])
        return batch

    def outputs(self, model: nn.Module, batch: Batch) -> Tensor:
        """(captions, 1 + negatives): each caption's score with its image first, then the others."""
        return scores(model, batch).float().view(-1, int(batch["candidates"][0]))

    def loss_from(self, grouped: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(grouped, torch.zeros(len(grouped), dtype=torch.long, device=grouped.device))

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        grouped = self.outputs(model, batch)
        loss = self.loss_from(grouped, batch)
        return loss, stats(loss, len(grouped))

    def predict(self, model: nn.Module, batch: Batch, ctx: TaskContext) -> list[float]:
        """Scores of the pairs of a `pair_batches` batch (not of a training batch)."""
        return scores(model, batch).float().tolist()

    def pairs(self, examples: Sequence[TaskExample]) -> tuple[list[str], list[tuple[int, int]], list[int]]:
        """The evaluation grid: images, every (caption, image) index pair, and each caption's own image."""
        images = sorted({e.images[0] for e in examples})
        position = {key: i for i, key in enumerate(images)}
        grid = [(c, i) for c in range(len(examples)) for i in range(len(images))]
        return images, grid, [position[e.images[0]] for e in examples]

    def metric_from_scores(self, matrix: Tensor, caption_image: Sequence[int]) -> dict[str, float]:
        return retrieval_recalls(matrix, caption_image)
