"""UniterConfig as a transformers config (`model_type` "uniter"), and the config.json our savers write.

`AutoConfig.from_pretrained(dir)` reads a model directory through `UniterHFConfig`; our loader
(`checkpoint.load_config`) reads a config.json that names `model_type` through the same class, so the
two can never disagree about a directory. A config.json without `model_type` (written before this
class existed) is a bare UniterConfig and is read strictly, as it always was.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import PreTrainedConfig

from lottery.models.uniter.config import UniterConfig

MODEL_TYPE = "uniter"


@strict
class UniterHFConfig(PreTrainedConfig):
    """Every UniterConfig field under its own name; defaults are uniter-base, as `BertConfig()` is bert-base.

    A fine-tuned directory also names its head: `task` and `num_outputs` (see finetuned.py; the answer
    vocabulary stays in task.json). Pre-training and backbone directories leave both None.
    """

    model_type = MODEL_TYPE
    # UNITER always ties (modeling.TIED_WEIGHTS), so it is not a choice a config.json could make; transformers
    # reads this attribute to decide whether a model's `_tied_weights_keys` apply.
    tie_word_embeddings: ClassVar[bool] = True

    name: str = "uniter-base"
    vocab_size: int = 28996
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    img_dim: int = 2048
    num_region_classes: int = 1601
    task: str | None = None
    num_outputs: int | None = None

    def validate_uniter_fields(self) -> None:
        """Run on construction (a `@strict` class validator): the sizes must make a valid UniterConfig."""
        self.to_uniter_config()

    def to_uniter_config(self) -> UniterConfig:
        """The project's frozen config of these sizes (what the modules are built from)."""
        return UniterConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(UniterConfig)})

    @classmethod
    def from_uniter_config(cls, config: UniterConfig, **head: Any) -> UniterHFConfig:
        """`head` is `task=` and `num_outputs=` for a fine-tuned model; nothing for the others."""
        return cls(**config.to_dict(), **head)


def as_hf_config(config: UniterConfig | UniterHFConfig) -> UniterHFConfig:
    """The models accept either: our code builds them from a UniterConfig, transformers from its own."""
    return config if isinstance(config, UniterHFConfig) else UniterHFConfig.from_uniter_config(config)


def config_json(config: UniterConfig, architecture: str, **head: Any) -> dict[str, Any]:
    """What our savers write as config.json: what transformers needs to pick the class (`model_type`,
    `architectures`), every UniterConfig field (never only those that differ from a default, unlike
    transformers' own `save_pretrained`), and for a fine-tuned directory its `task` and `num_outputs`."""
    return {"model_type": MODEL_TYPE, "architectures": [architecture], **config.to_dict(), **head}


def config_from_json(data: dict[str, Any]) -> UniterConfig:
    """The UniterConfig of a parsed config.json that names a `model_type`, read as AutoConfig reads it:
    missing fields take the defaults, transformers' own keys (and the head's) are not UniterConfig fields."""
    if data["model_type"] != MODEL_TYPE:
        raise ValueError(
            f"model_type is {data['model_type']!r}, not {MODEL_TYPE!r}: this is not a UNITER model"
        )
    try:
        return UniterHFConfig.from_dict(dict(data)).to_uniter_config()
    except StrictDataclassError as err:  # its message spans lines; the cause is the one-line reason
        raise ValueError(str(err.__cause__ or err)) from err
