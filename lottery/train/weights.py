"""Read a DeepSpeed engine's full fp32 weights, whatever its ZeRO stage, to save a model directory.

Collective: every rank must call :func:`full_state_dict`; only rank 0 gets the tensors (others get
an empty dict), so memory beyond one rank stays O(one parameter at a time) under ZeRO-3.
"""

from __future__ import annotations

import torch
from torch import Tensor


def full_state_dict(engine) -> dict[str, Tensor]:
    """name -> full fp32 tensor on CPU (rank 0), for every parameter and buffer of the module.

    Under ZeRO-3 each parameter is gathered alone. In bf16 runs the fp32 master copy is read
    (``safe_get_full_fp32_param``) since the module's bf16 working copy has lost precision. At stage 0
    the module holds the fp32 weights itself (the DeepSpeed helper does not reflect them there).
    """
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    stage = engine.zero_optimization_stage()
    bf16 = engine.bfloat16_enabled()
    is_main = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    module = engine.module
    state: dict[str, Tensor] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if stage == 3:
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                value = safe_get_full_fp32_param(param) if bf16 else param.data
                value = value.detach().float().cpu().clone() if is_main else None
        elif bf16 and stage > 0:
            value = safe_get_full_fp32_param(param).detach().float().cpu().clone()
        else:
            value = param.detach().float().cpu().clone()
        if is_main:
            state[name] = value
    if is_main:
        for name, buffer in module.named_buffers():
            state[name] = buffer.detach().cpu().clone()
    return state
