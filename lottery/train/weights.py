"""Read a DeepSpeed engine's full fp32 weights, whatever its ZeRO stage and precision, to save a model.

Collective: every rank must call :func:`full_state_dict`; only rank 0 gets the tensors (others get
an empty dict), so memory beyond one rank stays O(one parameter at a time) under ZeRO-3.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lottery.sparsity.slots import full_master


def full_state_dict(engine) -> dict[str, Tensor]:
    """name -> full fp32 tensor on CPU (rank 0), for every parameter and buffer of the module.

    The optimizer's fp32 master is read, not the module weight, which under bf16/fp16 has lost
    precision (a model saved from it would not be the model that was trained). Under ZeRO-3 each
    parameter is gathered alone.
    """
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    stage3 = engine.zero_optimization_stage() == 3
    is_main = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    module = engine.module
    state: dict[str, Tensor] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if stage3:
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                low_precision = param.dtype != torch.float32
                value = safe_get_full_fp32_param(param) if low_precision else param.data
                value = value.detach().float().cpu().clone() if is_main else None
        else:
            value = full_master(engine, param).cpu().clone()
        if is_main:
            state[name] = value
    if is_main:
        saved = set(module.state_dict(keep_vars=True))  # persistent buffers only: what a directory holds
        for name, buffer in module.named_buffers():
            if name in saved:
                state[name] = buffer.detach().cpu().clone()
    return state
