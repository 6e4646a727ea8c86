"""RefCOCO+: score every region for the expression; cross-entropy over the regions, accuracy of the best.

A shapes-world example names its target region; a benchmark example gives a ground-truth box, and the
target is the detected region that overlaps it most (IoU), as referring-expression models trained on
detections do.
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
from lottery.tasks.packing import unpack_outputs


def best_overlap(bbox_xywh: Sequence[float], image_size: Sequence[float], boxes: Tensor) -> int:
    """Index of the region (normalised x1, y1, x2, y2, ...) with the highest IoU with a pixel box."""
    width, height = image_size
    x, y, w, h = bbox_xywh
    gt = torch.tensor([x / width, y / height, (x + w) / width, (y + h) / height])
    lo = torch.maximum(boxes[:, :2], gt[:2])
    hi = torch.minimum(boxes[:, 2:4], gt[2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    areas = (boxes[:, 2:4] - boxes[:, :2]).prod(dim=1)
    iou = inter / (areas + (gt[2:] - gt[:2]).prod() - inter)
    return int(iou.argmax())


def target_region(example: TaskExample, ctx: TaskContext) -> int:
    if "region" in example.fields:
        return int(example.fields["region"])
    _, boxes = ctx.image(example.images[0])
    return best_overlap(example.fields["bbox"], example.fields["image_size"], boxes.float())


@dataclass(frozen=True)
class ReferringExpressions:
    name: str = "refcoco+"

    def collate(self, examples: Sequence[TaskExample], ctx: TaskContext, generator: torch.Generator) -> Batch:
        batch = pack_pairs(ctx, [ctx.ids(e.text) for e in examples], [e.images[0] for e in examples])
        batch["targets"] = torch.tensor([target_region(e, ctx) for e in examples])
        return batch

    def outputs(self, model: nn.Module, batch: Batch) -> Tensor:
        """(B, N) region scores; padding slots get -1e4 (finite, so a KL between two of them is too)."""
        sequence = encode(model, batch)
        _, regions, _, valid = unpack_outputs(sequence, batch["txt_lens"], batch["num_regions"])
        return model.head(regions).squeeze(-1).float().masked_fill(~valid, -1e4)

    def loss_from(self, region_scores: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(region_scores, batch["targets"])

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        loss = self.loss_from(self.outputs(model, batch), batch)
        return loss, stats(loss, len(batch["targets"]))

    def predict(self, model: nn.Module, batch: Batch, ctx: TaskContext) -> list[Tied]:
        """For each region tied for the best score, whether it is the target.

        The target is resolved in `collate` (a box needs the image's regions), so the metric, which
        only sees the examples, gets hit flags. Only an image's own regions compete: its finite padding
        score would tie with (or beat) the regions of a constant model scoring as low.
        """
        region_scores = self.outputs(model, batch).cpu()
        counts, targets = batch["num_regions"].tolist(), batch["targets"].tolist()
        predictions = []
        for row, count, target in zip(region_scores, counts, targets, strict=True):
            (tied,) = tied_argmax(row[None, :count])
            predictions.append(Tied(tuple(region == target for region in tied.labels)))
        return predictions

    def metric(self, predictions: Sequence[Tied | bool], examples: Sequence[TaskExample]) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, [True] * len(examples))}
