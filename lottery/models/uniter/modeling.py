"""UNITER (Chen et al., 2020) from transformers BERT parts, with the original checkpoint's names.

Every parameter is named as in ChenRocks/UNITER `model/model.py` and `model/pretrain.py`, so
`UniterForPretraining(preset("uniter-base")).state_dict()` has exactly the keys and shapes of an
original `uniter-base.pt`. The encoder and pooler are transformers' `BertEncoder` and `BertPooler`.

Heads are submodules called through `__call__` (never through their `.weight` directly), because
DeepSpeed ZeRO-3 gathers a module's parameters only in its forward hooks.

The models are transformers `PreTrainedModel`s of `UniterHFConfig` (registered with the Auto classes in
auto.py); our code still builds them from a `UniterConfig`. Weights are drawn in `_init_weights`, which
`post_init` applies module by module in the order `nn.Module.apply` visits them, so a seed gives the same
model as before they were `PreTrainedModel`s.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.models.bert.modeling_bert import BertEncoder, BertPooler, BertPredictionHeadTransform

from lottery.models.uniter.config import UniterConfig
from lottery.models.uniter.hf_config import UniterHFConfig, as_hf_config
from lottery.sparsity.scope import ScopedPruning

# alias -> owner: each alias is the very same Parameter as its owner. `state_dict()` lists both names
# (as the original checkpoint does); our safetensors files store the owner only.
TIED_WEIGHTS: dict[str, str] = {
    "cls.predictions.decoder.weight": "uniter.embeddings.word_embeddings.weight",
    "feat_regress.weight": "uniter.img_embeddings.img_linear.weight",
}

# Image regions use this token type of the *text* embeddings, as the original does.
IMAGE_TOKEN_TYPE = 1


def init_weights(module: nn.Module, std: float) -> None:
    """BERT/UNITER initialisation, for `module.apply`: N(0, std) weights, zero biases, LayerNorm 1/0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class UniterTextEmbeddings(nn.Module):
    """Words + positions + token types, LayerNorm, dropout: (B, T) ids -> (B, T, H)."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, input_ids: Tensor, position_ids: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """`position_ids` defaults to 0..T-1 and `token_type_ids` to 0, what UNITER's datasets feed."""
        if position_ids is None:
            position_ids = torch.arange(input_ids.size(1), device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class UniterImageEmbeddings(nn.Module):
    """Region features (B, N, img_dim) and 7-d boxes (B, N, 7) -> (B, N, H)."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.img_linear = nn.Linear(config.img_dim, config.hidden_size)
        self.img_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pos_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pos_linear = nn.Linear(7, config.hidden_size)
        # Row 1 is the learned [MASK] feature of masked region modelling; row 0 stays zero.
        self.mask_embedding = nn.Embedding(2, config.img_dim, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, img_feat: Tensor, img_pos_feat: Tensor, type_embeddings: Tensor, img_masks: Tensor | None = None
    ) -> Tensor:
        """`img_masks` (B, N), 1 where a region is masked, adds the [MASK] feature to those regions."""
        if img_masks is not None:
            # The original zeroes row 0 in place on every forward; multiplying by the mask gives the same
            # sum without writing to a parameter, which a ZeRO-3 partitioned parameter would not keep.
            masked = img_masks.unsqueeze(-1).to(img_feat.dtype)
            img_feat = img_feat + self.mask_embedding(img_masks.long()) * masked
        embeddings = (
            self.img_layer_norm(self.img_linear(img_feat))
            + self.pos_layer_norm(self.pos_linear(img_pos_feat))
            + type_embeddings
        )
        return self.dropout(self.LayerNorm(embeddings))


class UniterPreTrainedModel(PreTrainedModel):
    """What the UNITER models share as transformers models: their config, their init, the backbone's name."""

    config_class = UniterHFConfig
    # A checkpoint of a model with heads stores the backbone under `uniter.`; transformers strips it for UniterModel.
    base_model_prefix = "uniter"
    # The encoder is BERT's, which runs PyTorch's fused attention (config.ATTN_IMPLEMENTATION).
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, self.config.initializer_range)


class UniterModel(UniterPreTrainedModel):
    """The single-stream UNITER transformer: text and regions packed into one sequence (`AutoModel`)."""

    def __init__(self, config: UniterConfig | UniterHFConfig) -> None:
        super().__init__(as_hf_config(config))
        sizes = self.config.to_uniter_config()
        bert_config = sizes.to_bert_config()
        # The attention transformers settled on ("sdpa" unless `attn_implementation=` asked for another).
        bert_config._attn_implementation = self.config._attn_implementation
        self.embeddings = UniterTextEmbeddings(sizes)
        self.img_embeddings = UniterImageEmbeddings(sizes)
        self.encoder = BertEncoder(bert_config)
        self.pooler = BertPooler(bert_config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # Row 0 of the [MASK] feature (unmasked regions) starts at zero. Here, not on UniterImageEmbeddings:
        # transformers skips the init of a module without parameters of its own. A weight loaded by
        # from_pretrained is marked, and kept.
        mask = self.img_embeddings.mask_embedding
        if module is mask and not getattr(mask.weight, "_is_hf_initialized", False):
            with torch.no_grad():
                mask.weight[0].zero_()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor | None,
        position_ids: Tensor | None,
        img_feat: Tensor | None,
        img_pos_feat: Tensor | None,
        attn_masks: Tensor,
        gather_index: Tensor | None = None,
        img_masks: Tensor | None = None,
        txt_type_ids: Tensor | None = None,
        img_type_ids: Tensor | None = None,
        txt_delta: Tensor | None = None,
        img_delta: Tensor | None = None,
    ) -> Tensor:
        """Sequence output (B, L, H); the pooled output is `self.pooler(sequence_output)`.

        Shapes: input_ids/position_ids/txt_type_ids (B, T), img_feat (B, N, img_dim), img_pos_feat
        (B, N, 7), img_masks/img_type_ids (B, N), attn_masks (B, L) with 1 for real tokens, and
        gather_index (B, L) indexing into the concatenation [text (T) ; regions (N)] so that each
        sample's text is followed directly by its regions, padding only at the end. With text only
        (img_feat None) or regions only (input_ids None) L is T or N and gather_index is unused.
        `txt_delta` (B, T, H) and `img_delta` (B, N, H) are added to the text and region embeddings:
        the perturbations of adversarial (VILLA) training.
        """
        if input_ids is None and img_feat is None:
            raise ValueError(
                "UniterModel.forward: input_ids and img_feat are both None; give text, regions or both"
            )
        txt_emb = None if input_ids is None else self.embeddings(input_ids, position_ids, txt_type_ids)
        if txt_delta is not None and txt_emb is not None:
            txt_emb = txt_emb + txt_delta
        img_emb = None
        if img_feat is not None:
            if img_pos_feat is None:
                raise ValueError("UniterModel.forward: img_feat given without img_pos_feat (B, N, 7 boxes)")
            if img_type_ids is None:
                img_type_ids = torch.full(img_feat.shape[:2], IMAGE_TOKEN_TYPE, device=img_feat.device)
            type_embeddings = self.embeddings.token_type_embeddings(img_type_ids)
            img_emb = self.img_embeddings(img_feat, img_pos_feat, type_embeddings, img_masks)
            if img_delta is not None:
                img_emb = img_emb + img_delta

        if img_emb is None:
            embedding_output = txt_emb
        elif txt_emb is None:
            embedding_output = img_emb
        else:
            if gather_index is None:
                raise ValueError(
                    "UniterModel.forward: text and regions need gather_index (B, L) to pack them without "
                    "padding in between"
                )
            both = torch.cat([txt_emb, img_emb], dim=1)
            index = gather_index.unsqueeze(-1).expand(-1, -1, both.size(-1))
            embedding_output = torch.gather(both, dim=1, index=index)

        if attn_masks.shape != embedding_output.shape[:2]:
            raise ValueError(
                f"UniterModel.forward: attn_masks has shape {tuple(attn_masks.shape)} but the packed sequence "
                f"is {tuple(embedding_output.shape[:2])}; they must agree (B, L)"
            )
        dtype = embedding_output.dtype
        additive_mask = (1.0 - attn_masks[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        return self.encoder(embedding_output, additive_mask).last_hidden_state


class LMPredictionHead(nn.Module):
    """MLM logits (..., vocab): transform, the tied word-embedding matrix, and an own bias."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config.to_bert_config())
        # On "meta" until `tie_weights` makes the weight the word embeddings: no vocab x hidden matrix is
        # allocated (or drawn) only to be replaced.
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False, device="meta")
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden)) + self.bias


class MLMHead(nn.Module):
    """`cls` of the original: a holder for `predictions`, kept for the key names."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.predictions = LMPredictionHead(config)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.predictions(hidden)


class RegionFeatureRegression(nn.Module):
    """Masked region feature regression: (..., H) -> (..., img_dim) through the transposed img_linear."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        )
        # img_linear's weight once tied (`tie_weights`); a meta placeholder until then, as the decoder's.
        self.weight = nn.Parameter(torch.empty(hidden, config.img_dim, device="meta"))
        self.bias = nn.Parameter(torch.zeros(config.img_dim))

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(self.net(hidden), self.weight.t(), self.bias)


class RegionClassification(nn.Module):
    """Masked region classification: (..., H) -> (..., num_region_classes) logits."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.LayerNorm(hidden, eps=config.layer_norm_eps),
            nn.Linear(hidden, config.num_region_classes),
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.net(hidden)


class UniterForPretraining(ScopedPruning, UniterPreTrainedModel):
    """UNITER with its pre-training heads (`AutoModelForPreTraining`). ``forward(batch, task)`` hands itself
    to the task's loss.

    The task code calls the parts: MLM: `cls(seq)`; MRFR: `feat_regress(h)`; MRC: `region_classifier(h)`;
    ITM: `itm_output(uniter.pooler(seq))`, where `seq = uniter(...)`. Going through ``forward`` (and
    so through the DeepSpeed engine's ``__call__``) keeps every head a module call, which ZeRO-3 needs
    to gather its parameters.
    """

    # transformers' {target: source} is our {alias: owner}: loading fills the owner and ties the alias to it.
    _tied_weights_keys = TIED_WEIGHTS

    def __init__(self, config: UniterConfig | UniterHFConfig) -> None:
        super().__init__(as_hf_config(config))
        sizes = self.config.to_uniter_config()
        self.uniter = UniterModel(self.config)
        self.cls = MLMHead(sizes)
        self.feat_regress = RegionFeatureRegression(sizes)
        self.region_classifier = RegionClassification(sizes)
        self.itm_output = nn.Linear(sizes.hidden_size, 2)
        # Draws the heads (the backbone drew its own) and ties: the decoder is visited while still a meta
        # placeholder, so the tied word embeddings are never redrawn.
        self.post_init()

    def forward(self, batch: dict[str, Tensor], task: Any) -> tuple[Tensor, dict[str, float]]:
        """``task.loss(self, batch) -> (loss, stats)``: the task, not the model, knows its loss."""
        return task.loss(self, batch)

    def tie_weights(self, missing_keys: set[str] | None = None, recompute_mapping: bool = True) -> None:
        """Make every alias in TIED_WEIGHTS the same Parameter as its owner; call after loading.

        Replaces transformers' tying, with its signature (`post_init` and `from_pretrained` call it; the
        latter's `missing_keys` loses the aliases here; the mapping is TIED_WEIGHTS, never recomputed):
        that one also pads or cuts a tied module's `bias` to its weight's rows, which would turn
        feat_regress.bias (img_dim entries; the weight is img_linear's, hidden x img_dim) into hidden_size.
        """
        for alias, owner in TIED_WEIGHTS.items():
            module_name, _, param_name = alias.rpartition(".")
            setattr(self.get_submodule(module_name), param_name, self.get_parameter(owner))
            if missing_keys is not None:
                missing_keys.discard(alias)
