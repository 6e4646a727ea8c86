"""The UNITER architecture hyper-parameters, their JSON form and the shipped presets.

A model directory stores this config as `config.json`; the presets reproduce the published UNITER
sizes so that an original checkpoint of that size loads without edits.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from transformers import BertConfig
from transformers.activations import ACT2FN

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# "sdpa" runs PyTorch's fused attention and accepts our additive float mask (checked against "eager" to
# 4e-7 on padded batches); it is the faster of the two on CPU and GPU.
ATTN_IMPLEMENTATION = "sdpa"


@dataclass(frozen=True)
class UniterConfig:
    """Sizes of one UNITER model; `name` identifies it in model directories and tickets."""

    name: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    # Image tokens use token type 1 of the text embeddings, so at least two types are needed.
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    img_dim: int = 2048
    num_region_classes: int = 1601

    def __post_init__(self) -> None:
        sizes = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "img_dim": self.img_dim,
            "num_region_classes": self.num_region_classes,
        }
        for key, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UniterConfig {self.name!r}: {key}={value!r} must be a positive integer")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"UniterConfig {self.name!r}: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}; pick a head count that divides it"
            )
        if self.type_vocab_size < 2:
            raise ValueError(
                f"UniterConfig {self.name!r}: type_vocab_size={self.type_vocab_size}, but image tokens use "
                "token type 1; set it to 2 or more"
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"UniterConfig {self.name!r}: unknown hidden_act {self.hidden_act!r}; use one of "
                f"transformers' activations, e.g. 'gelu'"
            )
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(
                    f"UniterConfig {self.name!r}: {key}={getattr(self, key)!r} must be in [0, 1)"
                )

    def to_bert_config(self) -> BertConfig:
        """The BertConfig that the transformers encoder, pooler and MLM transform are built from."""
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            layer_norm_eps=self.layer_norm_eps,
            initializer_range=self.initializer_range,
            attn_implementation=ATTN_IMPLEMENTATION,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UniterConfig:
        """Build from a dict (e.g. a parsed config.json); unknown or missing keys are errors."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"UniterConfig: unknown keys {unknown}; known keys are {sorted(fields)}")
        required = [
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"UniterConfig: missing required keys {missing}")
        return cls(**data)


def _preset_dir() -> Traversable:
    return resources.files(__package__) / "presets"


def preset_names() -> list[str]:
    """Names accepted by `preset`, from the JSON files shipped in `presets/`."""
    return sorted(p.name.removesuffix(".json") for p in _preset_dir().iterdir() if p.name.endswith(".json"))


def preset(name: str) -> UniterConfig:
    """The shipped config called `name` (e.g. "uniter-base")."""
    known = preset_names()
    if name not in known:
        raise ValueError(f"unknown UNITER preset {name!r}; known presets: {', '.join(known)}")
    return UniterConfig.from_dict(json.loads((_preset_dir() / f"{name}.json").read_text()))
