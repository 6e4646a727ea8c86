"""A tiny HF BERT classifier and a 60% magnitude ticket over its encoder, named as our UNITER names it.

Shared by the tests of `lottery.api`: the ticket is what `lottery` would cut from a UNITER
(``uniter.encoder.layer.N...weight``) and the model is what a user trains (``bert.encoder.layer.N...``),
so every test goes through ``rename={"uniter.": "bert."}``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import BertConfig, BertForSequenceClassification

from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import DEFAULT_SCOPE, prunable_parameters
from lottery.tickets import TicketMeta
from lottery.tickets.renaming import renamed

ENCODER_SCOPE = DEFAULT_SCOPE[:4]  # the encoder's Q/K/V, attention output and FFN weights; no pooler
RENAME = {"uniter.": "bert."}
SPARSITY = 0.6
META = TicketMeta(family="uniter", model="uniter-tiny", method="magnitude")


def tiny_bert(seed: int = 0, intermediate_size: int = 64) -> BertForSequenceClassification:
    """2 layers, hidden 32, vocabulary 100: a training step in milliseconds on a CPU."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=intermediate_size,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def uniter_ticket(model: BertForSequenceClassification, sparsity: float = SPARSITY) -> MaskSet:
    """A global magnitude mask pruning `sparsity` of the encoder weights, under UNITER names."""
    weights = {
        f"uniter.{name}": param.detach()
        for name, param in prunable_parameters(model.bert, ENCODER_SCOPE).items()
    }
    scores = torch.cat([w.abs().reshape(-1) for w in weights.values()])
    threshold = scores.kthvalue(round(sparsity * scores.numel())).values
    return MaskSet({name: w.abs() > threshold for name, w in weights.items()}, ENCODER_SCOPE)


def bert_weights(model: BertForSequenceClassification, masks: MaskSet) -> dict[str, Tensor]:
    """A copy of the weights `masks` covers, under the model's names."""
    params = dict(model.named_parameters())
    return {name: params[renamed(name, RENAME)].detach().clone() for name in masks.masks}


def pruned_nonzero(model: BertForSequenceClassification, masks: MaskSet) -> int:
    """How many of the ticket's pruned weights are not exactly 0.0 in `model`."""
    return sum(int(torch.count_nonzero(w[~masks.masks[n]])) for n, w in bert_weights(model, masks).items())


def kept_changed_fraction(before: dict[str, Tensor], after: dict[str, Tensor], masks: MaskSet) -> float:
    """Fraction of the ticket's kept weights whose value changed between two copies."""
    changed = sum(int((after[n] != before[n])[m].sum()) for n, m in masks.masks.items())
    return changed / masks.kept


def batch(seed: int, size: int = 4, length: int = 8) -> dict[str, Tensor]:
    """Random token ids with labels: enough signal for gradients on every weight."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, 100, (size, length), generator=generator),
        "attention_mask": torch.ones(size, length, dtype=torch.long),
        "labels": torch.randint(0, 2, (size,), generator=generator),
    }
