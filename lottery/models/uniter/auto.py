"""Register UNITER with transformers' Auto classes; `lottery.models.uniter` calls `register` on import.

After it, transformers opens our model directories by their config.json's `model_type` "uniter":

    AutoConfig                          -> UniterHFConfig
    AutoModel                           -> UniterModel, the backbone (of any of our directories)
    AutoModelForPreTraining             -> UniterForPretraining, of a `lottery model init` directory
    AutoModelForSequenceClassification  -> UniterWithTaskHead, of a fine-tuned `model/` directory

The last is the nearest transformers task for the heads of all seven downstream tasks: outputs over the
whole encoded (image, text) pair (per region for RefCOCO+).
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

from lottery.models.uniter.finetuned_model import UniterWithTaskHead
from lottery.models.uniter.hf_config import MODEL_TYPE, UniterHFConfig
from lottery.models.uniter.modeling import UniterForPretraining, UniterModel


def register() -> None:
    """Idempotent (`exist_ok`), so a re-import (importlib.reload, a second test session) is harmless."""
    AutoConfig.register(MODEL_TYPE, UniterHFConfig, exist_ok=True)
    AutoModel.register(UniterHFConfig, UniterModel, exist_ok=True)
    AutoModelForPreTraining.register(UniterHFConfig, UniterForPretraining, exist_ok=True)
    AutoModelForSequenceClassification.register(UniterHFConfig, UniterWithTaskHead, exist_ok=True)
