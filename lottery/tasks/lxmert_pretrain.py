"""LXMERT's pre-training tasks as LXMERT defines them, on the batches UNITER's tasks collate.

- ``mlm``: masked words predicted by `cls.predictions` from the language stream.
- ``itm``: cross-modality matching, `cls.seq_relationship` on the pooled [CLS] (no WRA: UNITER's).
- ``mrfr``: masked object feature regression, smooth L1 through `obj_predict_head`'s "feat" decoder.
- ``obj``: masked object classification against the detector's label (the argmax of its class
  scores), each region's cross-entropy weighted by the detector's confidence in it (its top score),
  as LXMERT weights its detected labels by `obj_confs`.

Both masked-object losses are multiplied by LXMERT's `visual_loss_normalizer` (6.67), as its
pre-training does. The collate steps are UNITER's (`lottery.tasks.pretrain`): masked regions arrive
with their features zeroed, which is LXMERT's own masking (it has no mask embedding), and the model
ignores `img_masks`. Image QA is left out: the pre-training shards carry no answers.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lottery.evaluation.ties import expected_correct
from lottery.tasks.masking import IGNORE
from lottery.tasks.pretrain import Batch, PretrainTask, collate_itm, collate_mlm, collate_mrm


def classification_stats(name: str, loss: Tensor, logits: Tensor, targets: Tensor) -> dict[str, float]:
    """The summed statistics validation adds up over batches and ranks (`pretrain.summarise`)."""
    count = float(targets.numel())
    return {
        f"{name}_loss_sum": float(loss.detach()) * count,
        f"{name}_correct_sum": expected_correct(logits, targets),
        f"{name}_count": count,
    }


def loss_mlm(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    labels = batch["txt_labels"]
    language = model.encode(batch).language[:, : labels.size(1)]
    selected = labels != IGNORE
    logits = model.cls.predictions(language[selected]).float()
    targets = labels[selected]
    loss = F.cross_entropy(logits, targets)
    return loss, classification_stats("mlm", loss, logits, targets)


def loss_itm(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    logits = model.cls.seq_relationship(model.encode(batch).pooled).float()
    targets = batch["itm_targets"]
    loss = F.cross_entropy(logits, targets)
    return loss, classification_stats("itm", loss, logits, targets)


def _masked_predictions(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """`obj_predict_head`'s outputs at the masked regions only, (M, ...) per decoder."""
    vision = model.encode(batch).vision
    return {name: out[batch["img_masks"]] for name, out in model.obj_predict_head(vision).items()}


def loss_mrfr(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    predicted = _masked_predictions(model, batch)["feat"].float()
    per_region = F.smooth_l1_loss(predicted, batch["feat_targets"].float(), reduction="none").mean(1)
    loss = per_region.mean() * model.config.visual_loss_normalizer
    count = float(predicted.size(0))
    return loss, {"mrfr_loss_sum": float(loss.detach()) * count, "mrfr_count": count}


def loss_obj(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    if "soft_targets" not in batch:
        raise ValueError(
            "masked object classification needs soft.npy (detector class scores) in every sample"
        )
    logits = _masked_predictions(model, batch)["obj"].float()
    confidence, labels = batch["soft_targets"].float().max(dim=1)
    per_region = F.cross_entropy(logits, labels, reduction="none") * confidence
    loss = per_region.mean() * model.config.visual_loss_normalizer
    return loss, classification_stats("obj", loss, logits, labels)


LXMERT_TASKS: dict[str, PretrainTask] = {
    "mlm": PretrainTask("mlm", collate_mlm, loss_mlm, has_accuracy=True),
    "itm": PretrainTask("itm", collate_itm, loss_itm, has_accuracy=True),
    "mrfr": PretrainTask("mrfr", collate_mrm, loss_mrfr, has_accuracy=False),
    "obj": PretrainTask("obj", collate_mrm, loss_obj, has_accuracy=True),
}
