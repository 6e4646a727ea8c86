"""UNITER built from transformers BERT parts, with the original checkpoint key names.

Importing this package registers model_type "uniter" with transformers' AutoConfig and Auto model classes
(auto.py), so that `AutoModel.from_pretrained(dir)` opens our model directories.
"""

from lottery.models.uniter.auto import register
from lottery.models.uniter.checkpoint import ModelDirError, from_pretrained, load_config, save_pretrained
from lottery.models.uniter.config import UniterConfig, preset, preset_names
from lottery.models.uniter.convert import ConversionReport, convert_original
from lottery.models.uniter.finetuned import TaskHead, from_finetuned, save_finetuned, task_head
from lottery.models.uniter.finetuned_model import UniterWithTaskHead
from lottery.models.uniter.from_bert import MINILM, InitReport, init_from_bert, tokenizer_files
from lottery.models.uniter.hf_config import UniterHFConfig
from lottery.models.uniter.modeling import (
    TIED_WEIGHTS,
    UniterForPretraining,
    UniterImageEmbeddings,
    UniterModel,
    UniterPreTrainedModel,
    UniterTextEmbeddings,
)

register()

__all__ = [
    "MINILM",
    "TIED_WEIGHTS",
    "ConversionReport",
    "InitReport",
    "ModelDirError",
    "TaskHead",
    "UniterConfig",
    "UniterForPretraining",
    "UniterHFConfig",
    "UniterImageEmbeddings",
    "UniterModel",
    "UniterPreTrainedModel",
    "UniterTextEmbeddings",
    "UniterWithTaskHead",
    "convert_original",
    "from_finetuned",
    "from_pretrained",
    "init_from_bert",
    "load_config",
    "preset",
    "preset_names",
    "save_finetuned",
    "save_pretrained",
    "task_head",
    "tokenizer_files",
]
