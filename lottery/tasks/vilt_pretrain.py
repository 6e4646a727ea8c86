"""ViLT's pre-training tasks as ViLT defines them, on the batches UNITER's tasks collate.

- ``mlm``: masked words predicted by `mlm_score` from the word outputs.
- ``itm``: image-text matching, `itm_score` on the pooled [CLS] (ViLT's word-patch alignment, an
  optimal-transport term, is left out, as UNITER's WRA is for LXMERT).

A patch model's image travels as its patches in the region slots (`lottery.data.patches`), so the
collate steps are UNITER's: MLM masks words, ITM swaps in another sample's image.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lottery.tasks.lxmert_pretrain import classification_stats
from lottery.tasks.masking import IGNORE
from lottery.tasks.pretrain import Batch, PretrainTask, collate_itm, collate_mlm


def loss_mlm(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    labels = batch["txt_labels"]
    words = model.encode(batch).language[:, : labels.size(1)]
    selected = labels != IGNORE
    logits = model.mlm_score(words[selected]).float()
    targets = labels[selected]
    loss = F.cross_entropy(logits, targets)
    return loss, classification_stats("mlm", loss, logits, targets)


def loss_itm(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    logits = model.itm_score(model.encode(batch).pooled).float()
    targets = batch["itm_targets"]
    loss = F.cross_entropy(logits, targets)
    return loss, classification_stats("itm", loss, logits, targets)


VILT_TASKS: dict[str, PretrainTask] = {
    "mlm": PretrainTask("mlm", collate_mlm, loss_mlm, has_accuracy=True),
    "itm": PretrainTask("itm", collate_itm, loss_itm, has_accuracy=True),
}
