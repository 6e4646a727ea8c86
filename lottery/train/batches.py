"""Move a collated batch to the engine's device, casting what the model's layers read to their dtype.

One function for every loop (pre-training, validation, fine-tuning, downstream evaluation): under
bf16/fp16 the region features and boxes meet low-precision weights in ``img_linear`` / ``pos_linear``
and must arrive in that dtype, while targets, labels and loss weights stay as collated, so that losses
are computed in fp32 on fp32 targets.
"""

from __future__ import annotations

import torch
from torch import Tensor

# the float inputs the model feeds straight into its (possibly low-precision) layers
LAYER_INPUTS = ("img_feat", "img_pos_feat", "txt_delta", "img_delta")


def to_device(batch: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """`batch` on `device`; float ``LAYER_INPUTS`` in `dtype` (the module's working dtype)."""
    moved = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if key in LAYER_INPUTS and value.is_floating_point():
            value = value.to(dtype)
        moved[key] = value
    return moved
