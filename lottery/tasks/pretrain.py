"""UNITER's pre-training tasks: MLM, ITM, MRFR and MRC-kl, each a collate step and a loss.

A task turns a list of decoded examples into one batch of tensors (``collate``) and a batch into a
loss on the model's heads (``loss``). Losses are computed in fp32 whatever the model's dtype, so bf16
training does not round the loss itself. Each loss also returns summed statistics (``*_sum`` and
``count``) that validation adds up over batches and ranks before dividing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lottery.evaluation.ties import expected_correct
from lottery.tasks.binding import AttributeVocab, swap_attribute
from lottery.tasks.masking import IGNORE, TextVocab, mask_regions, mask_tokens
from lottery.tasks.packing import pack, region_positions, unpack_outputs
from lottery.tasks.wra import ot_distance, wra_loss

Batch = dict[str, Tensor]
MODEL_INPUTS = (
    "input_ids",
    "position_ids",
    "img_feat",
    "img_pos_feat",
    "attn_masks",
    "gather_index",
    "img_masks",
)


@dataclass(frozen=True)
class CollateContext:
    vocab: TextVocab
    mask_prob: float = 0.15
    itm_neg_prob: float = 0.5
    wra_weight: float = 0.1
    itm_relation_neg_prob: float = 0.0
    # token id of a relation word -> its opposite's (`relation_reversals`); needed when the above is > 0
    reversals: dict[int, int] = field(default_factory=dict)
    itm_attribute_neg_prob: float = 0.0
    attributes: AttributeVocab | None = None  # needed when the above is > 0

    def __post_init__(self) -> None:
        if self.itm_relation_neg_prob > 0 and not self.reversals:
            raise ValueError("tasks.itm_relation_neg_prob > 0 needs the relation words' reversals")
        if self.itm_attribute_neg_prob > 0 and self.attributes is None:
            raise ValueError("tasks.itm_attribute_neg_prob > 0 needs the attribute words' token ids")
        if self.itm_relation_neg_prob + self.itm_attribute_neg_prob > 1.0:
            raise ValueError(
                "tasks.itm_relation_neg_prob + tasks.itm_attribute_neg_prob must be at most 1, got "
                f"{self.itm_relation_neg_prob} + {self.itm_attribute_neg_prob}"
            )


def relation_reversals(tokenizer, opposites: dict[str, str]) -> dict[int, int]:
    """Token ids of `opposites` (word -> opposite word), each word a single token of `tokenizer`."""
    words = sorted(set(opposites) | set(opposites.values()))
    ids = dict(zip(words, tokenizer.convert_tokens_to_ids(words), strict=True))
    unknown = [word for word, token in ids.items() if token == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"relation words {unknown} are not single tokens of the tokenizer")
    return {ids[word]: ids[opposite] for word, opposite in opposites.items()}


@dataclass(frozen=True)
class PretrainTask:
    name: str
    collate: Callable[[list, CollateContext, torch.Generator], Batch]
    loss: Callable[[nn.Module, Batch], tuple[Tensor, dict[str, float]]]
    has_accuracy: bool  # whether its stats carry `<name>_correct_sum`
    extra_stats: tuple[str, ...] = ()

    def stat_keys(self) -> tuple[str, ...]:
        kinds = ("loss_sum", "correct_sum", "count") if self.has_accuracy else ("loss_sum", "count")
        return tuple(f"{self.name}_{kind}" for kind in kinds) + self.extra_stats


def _ids(example) -> Tensor:
    return torch.as_tensor(example.input_ids, dtype=torch.long)


def _encode(model: nn.Module, batch: Batch) -> Tensor:
    return model.uniter(**{k: batch[k] for k in MODEL_INPUTS if k in batch})


def collate_mlm(examples: list, ctx: CollateContext, generator: torch.Generator) -> Batch:
    masked, labels = zip(
        *(mask_tokens(_ids(ex), ctx.mask_prob, ctx.vocab, generator) for ex in examples), strict=True
    )
    batch = pack(list(masked), [ex.feat for ex in examples], [ex.box for ex in examples])
    batch["txt_labels"] = torch.nn.utils.rnn.pad_sequence(
        list(labels), batch_first=True, padding_value=IGNORE
    )
    return batch


def loss_mlm(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """Masked words predicted from the whole image and the rest of the text."""
    labels = batch["txt_labels"]
    hidden = _encode(model, batch)[:, : labels.size(1)]
    selected = labels != IGNORE
    logits = model.cls(hidden[selected]).float()
    targets = labels[selected]
    loss = F.cross_entropy(logits, targets)
    count = float(targets.numel())
    correct = expected_correct(logits, targets)
    return loss, {
        "mlm_loss_sum": float(loss.detach()) * count,
        "mlm_correct_sum": correct,
        "mlm_count": count,
    }


def collate_itm(examples: list, ctx: CollateContext, generator: torch.Generator) -> Batch:
    """Half the pairs (by ``itm_neg_prob``) are mismatched: target 0 for those.

    A mismatched pair is the caption with another example's image or, for ``itm_relation_neg_prob``
    of them, the caption with its relation reversed beside its own image, or, for
    ``itm_attribute_neg_prob``, the caption with one mention's colour or shape changed beside its own
    image (`binding.swap_attribute`); a caption that cannot be changed so keeps the other image. The
    draws for these are only made when one is above 0, so a run without them draws the batches it
    always drew.
    """
    size = len(examples)
    if size < 2:
        raise ValueError("ITM needs at least 2 examples per batch to draw mismatched images")
    negative = torch.rand(size, generator=generator) < ctx.itm_neg_prob
    shift = torch.randint(1, size, (size,), generator=generator)
    image_of = torch.where(negative, (torch.arange(size) + shift) % size, torch.arange(size))
    texts = [_ids(ex) for ex in examples]
    if ctx.itm_relation_neg_prob > 0 or ctx.itm_attribute_neg_prob > 0:
        draw = torch.rand(size, generator=generator)
        reverse = negative & (draw < ctx.itm_relation_neg_prob)
        for i in reverse.nonzero().flatten().tolist():
            reversed_text = _reverse_relation(texts[i], ctx.reversals)
            if reversed_text is not None:
                texts[i], image_of[i] = reversed_text, i
        swap = negative & ~reverse & (draw < ctx.itm_relation_neg_prob + ctx.itm_attribute_neg_prob)
        for i in swap.nonzero().flatten().tolist():
            swapped = swap_attribute(texts[i], examples[i].meta["scene"], ctx.attributes, generator)
            if swapped is not None:
                texts[i], image_of[i] = swapped, i
    batch = pack(
        texts,
        [examples[j].feat for j in image_of.tolist()],
        [examples[j].box for j in image_of.tolist()],
    )
    batch["itm_targets"] = (~negative).long()
    batch["txt_lens"] = torch.tensor([len(ex.input_ids) for ex in examples])
    batch["num_regions"] = torch.tensor([len(examples[j].feat) for j in image_of.tolist()])
    batch["wra_weight"] = torch.tensor(ctx.wra_weight)
    return batch


def _reverse_relation(ids: Tensor, reversals: dict[int, int]) -> Tensor | None:
    """`ids` with each relation word replaced by its opposite; None when the caption has none."""
    hits = [i for i, token in enumerate(ids.tolist()) if token in reversals]
    if not hits:
        return None
    reversed_ids = ids.clone()
    for i in hits:
        reversed_ids[i] = reversals[int(ids[i])]
    return reversed_ids


def loss_itm(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """Does the caption describe the image? Two-way classifier on the pooled output, plus WRA.

    The reported `itm_loss` is the classifier's; the WRA distances of matched and mismatched pairs are
    summed separately (`wra_pos_sum`, `wra_neg_sum`) so validation can compare them.
    """
    sequence = _encode(model, batch)
    logits = model.itm_output(model.uniter.pooler(sequence)).float()
    targets = batch["itm_targets"]
    itm = F.cross_entropy(logits, targets)
    distance = ot_distance(*unpack_outputs(sequence, batch["txt_lens"], batch["num_regions"]))
    loss = itm + batch["wra_weight"].float() * wra_loss(distance, targets)
    count = float(targets.numel())
    matched = targets.bool()
    stats = {
        "itm_loss_sum": float(itm.detach()) * count,
        "itm_correct_sum": expected_correct(logits, targets),
        "itm_count": count,
        "wra_pos_sum": float(distance.detach()[matched].sum()),
        "wra_pos_count": float(matched.sum()),
        "wra_neg_sum": float(distance.detach()[~matched].sum()),
        "wra_neg_count": float((~matched).sum()),
    }
    return loss, stats


def collate_mrm(examples: list, ctx: CollateContext, generator: torch.Generator) -> Batch:
    """Hide ``mask_prob`` of each image's regions (features zeroed, the model adds ``mask_embedding``)."""
    masks = [mask_regions(len(ex.feat), ctx.mask_prob, generator) for ex in examples]
    feats = [ex.feat.masked_fill(m.unsqueeze(-1), 0.0) for ex, m in zip(examples, masks, strict=True)]
    batch = pack([_ids(ex) for ex in examples], feats, [ex.box for ex in examples])
    batch["img_masks"] = torch.nn.utils.rnn.pad_sequence(masks, batch_first=True, padding_value=False)
    txt_lens = [len(ex.input_ids) for ex in examples]
    batch["img_mask_tgt"] = region_positions(txt_lens, masks, batch["attn_masks"].size(1))
    batch["feat_targets"] = torch.cat([ex.feat[m] for ex, m in zip(examples, masks, strict=True)])
    if all(ex.soft is not None for ex in examples):
        batch["soft_targets"] = torch.cat([ex.soft[m] for ex, m in zip(examples, masks, strict=True)])
    return batch


def _masked_region_outputs(model: nn.Module, batch: Batch) -> Tensor:
    return _encode(model, batch)[batch["img_mask_tgt"]]


def loss_mrfr(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """Regress the hidden regions' input features through ``feat_regress`` (tied to ``img_linear``)."""
    predicted = model.feat_regress(_masked_region_outputs(model, batch)).float()
    loss = F.mse_loss(predicted, batch["feat_targets"].float())
    count = float(predicted.size(0))
    return loss, {"mrfr_loss_sum": float(loss.detach()) * count, "mrfr_count": count}


def loss_mrckl(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """KL divergence from the detector's soft class labels to the predicted class distribution."""
    if "soft_targets" not in batch:
        raise ValueError("MRC-kl needs soft.npy (detector class scores) in every sample of the shards")
    logits = model.region_classifier(_masked_region_outputs(model, batch)).float()
    loss = F.kl_div(F.log_softmax(logits, dim=-1), batch["soft_targets"].float(), reduction="batchmean")
    count = float(logits.size(0))
    return loss, {"mrckl_loss_sum": float(loss.detach()) * count, "mrckl_count": count}


TASKS: dict[str, PretrainTask] = {
    "mlm": PretrainTask("mlm", collate_mlm, loss_mlm, has_accuracy=True),
    "itm": PretrainTask(
        "itm",
        collate_itm,
        loss_itm,
        has_accuracy=True,
        extra_stats=("wra_neg_count", "wra_neg_sum", "wra_pos_count", "wra_pos_sum"),
    ),
    "mrfr": PretrainTask("mrfr", collate_mrm, loss_mrfr, has_accuracy=False),
    "mrckl": PretrainTask("mrckl", collate_mrm, loss_mrckl, has_accuracy=False),
}


def summarise(sums: dict[str, float], tasks: dict[str, PretrainTask] | None = None) -> dict[str, float]:
    """Validation metrics from summed statistics: accuracies, mean losses, and their mean ``loss``.

    `tasks` is the family's table (default: UNITER's).
    """
    metrics: dict[str, float] = {}
    for name in TASKS if tasks is None else tasks:
        count = sums.get(f"{name}_count", 0.0)
        if count:
            metrics[f"{name}_loss"] = sums[f"{name}_loss_sum"] / count
            if f"{name}_correct_sum" in sums:
                metrics[f"{name}_acc"] = sums[f"{name}_correct_sum"] / count
    losses = [v for k, v in metrics.items() if k.endswith("_loss")]
    if losses:
        metrics["loss"] = sum(losses) / len(losses)
    for side in ("pos", "neg"):
        if sums.get(f"wra_{side}_count"):
            metrics[f"wra_{side}"] = sums[f"wra_{side}_sum"] / sums[f"wra_{side}_count"]
    return metrics
