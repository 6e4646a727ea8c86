"""LXMERT on transformers' LXMERT classes: the model, its prunable scope, directories, and lxmert-mini."""

from lottery.models.lxmert.checkpoint import (
    from_pretrained,
    input_sizes,
    load_config,
    save_pretrained,
    write_model_files,
)
from lottery.models.lxmert.from_bert import InitReport, LayerPlan, init_from_bert
from lottery.models.lxmert.modeling import LXMERT_SCOPE, LxmertForLotteryPretraining, Streams, stream_masks

__all__ = [
    "LXMERT_SCOPE",
    "InitReport",
    "LayerPlan",
    "LxmertForLotteryPretraining",
    "Streams",
    "from_pretrained",
    "init_from_bert",
    "input_sizes",
    "load_config",
    "save_pretrained",
    "stream_masks",
    "write_model_files",
]
