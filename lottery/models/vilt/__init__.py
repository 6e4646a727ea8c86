"""ViLT on transformers' ViLT classes: the model, its prunable scope, directories, and vilt-mini."""

from lottery.models.vilt.checkpoint import (
    from_pretrained,
    input_sizes,
    load_config,
    model_grid,
    save_pretrained,
    write_model_files,
)
from lottery.models.vilt.from_bert import InitReport, init_from_bert
from lottery.models.vilt.modeling import VILT_SCOPE, ViltForLotteryPretraining, encode_joint, patch_grid

__all__ = [
    "VILT_SCOPE",
    "InitReport",
    "ViltForLotteryPretraining",
    "encode_joint",
    "from_pretrained",
    "init_from_bert",
    "input_sizes",
    "load_config",
    "model_grid",
    "patch_grid",
    "save_pretrained",
    "write_model_files",
]
