"""Keep pruned weights at exactly 0.0 on a DeepSpeed engine, under ZeRO 0, 1, 2 and 3 (and offload).

Zeroing weights once is not enough: AdamW moves a weight whose gradient or moments are non-zero, and
under ZeRO the optimizer updates an fp32 master that overwrites the module weight after each step.
So, measured on DeepSpeed 0.19.8 (see DESIGN.md), the enforcer:
- at install (and at every mask change), zeroes the pruned entries of the module weight, the fp32
  master and the optimizer moments;
- before every optimizer step, zeroes the pruned entries of the gradient, so that clipping sees the
  sparse gradient and Adam's update there is 0/(0 + eps) = 0 and decoupled weight decay scales 0.

Where the gradient is reachable differs by stage. ZeRO 0-2 keep whole weights on every rank, and a
tensor hook masks each gradient as autograd produces it, before DeepSpeed reduces or accumulates it.
ZeRO-3 gradients are reduce-scattered into partitions inside backward, so `before_step` masks each
rank's own partition between `backward` and `step`; nothing gathers a parameter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from deepspeed.utils import (
    safe_get_full_fp32_param,
    safe_get_full_optimizer_state,
    safe_get_local_fp32_param,
    safe_get_local_grad,
    safe_get_local_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
    safe_set_local_fp32_param,
    safe_set_local_grad,
    safe_set_local_optimizer_state,
)
from torch import Tensor, nn

from lottery import dist
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.partition import is_partitioned, owned_range

MOMENT_KEYS = ("exp_avg", "exp_avg_sq")


class MaskViolation(AssertionError):
    """A pruned weight is not exactly 0.0 somewhere (module weight, fp32 master)."""


class MaskEnforcer:
    """Installs a MaskSet on an engine and keeps it; `before_step` must run between backward and step."""

    def __init__(self, engine, masks: MaskSet) -> None:
        self.engine = engine
        self.params = dict(engine.module.named_parameters())
        missing = [n for n in masks.masks if n not in self.params]
        if missing:
            raise KeyError(f"mask names parameters the model does not have: {missing[:5]}")
        self.partitioned = any(is_partitioned(self.params[n]) for n in masks.masks)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._local: dict[str, Tensor] = {}  # the mask over what this rank holds, in the weight's dtype
        self.masks = masks
        self.install(masks)

    def install(self, masks: MaskSet) -> None:
        """Make `masks` the enforced mask (it may prune more than the current one); collective."""
        self.masks = masks
        for name, mask in masks.masks.items():
            param = self.params[name]
            if is_partitioned(param):
                self._local[name] = _partition_mask(param, mask)
                self._zero_partition(param, self._local[name])
            else:
                self._local[name] = mask.to(device=param.device, dtype=param.dtype)
                self._zero_replicated(param, self._local[name])
        if not self.partitioned and not self._hooks:
            self._hooks = [self.params[n].register_hook(self._grad_hook(n)) for n in masks.masks]

    def _grad_hook(self, name: str) -> Callable[[Tensor], Tensor]:
        local = self._local

        def mask_gradient(grad: Tensor) -> Tensor:
            return grad * local[name]

        return mask_gradient

    def before_step(self) -> None:
        """Mask this rank's gradient partitions (ZeRO-3) at an accumulation boundary; a no-op otherwise."""
        if not self.partitioned or not self.engine.is_gradient_accumulation_boundary():
            return
        for name, local in self._local.items():
            param = self.params[name]
            grad = safe_get_local_grad(param)
            if grad is not None:
                safe_set_local_grad(param, grad * local.to(grad.dtype))

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @torch.no_grad()
    def _zero_replicated(self, param: nn.Parameter, mask: Tensor) -> None:
        param.data.mul_(mask)
        if hasattr(
            param, "_hp_mapping"
        ):  # ZeRO 1-2 or bf16: a separate fp32 master (None on ranks without a fragment)
            safe_set_full_fp32_param(param, safe_get_full_fp32_param(param) * mask.float())
            for key in self._moment_keys():
                state = safe_get_full_optimizer_state(param, key)
                if state is not None:
                    safe_set_full_optimizer_state(param, state * mask.to(state.dtype), key)
            return
        state = getattr(self.engine.optimizer, "state", {}).get(param, {})  # stage 0: a torch optimizer
        for key in MOMENT_KEYS:
            if key in state:
                state[key].mul_(mask.to(state[key].dtype))

    @torch.no_grad()
    def _zero_partition(self, param: nn.Parameter, local: Tensor) -> None:
        param.ds_tensor.data.mul_(local.to(param.ds_tensor.dtype))
        master = safe_get_local_fp32_param(param)
        safe_set_local_fp32_param(param, master * local.to(master.dtype))
        for key in self._moment_keys():
            state = safe_get_local_optimizer_state(param, key)
            safe_set_local_optimizer_state(param, state * local.to(state.dtype), key)

    def _moment_keys(self) -> tuple[str, ...]:
        """The Adam moment keys once the optimizer has state (it has none before its first step)."""
        inner = getattr(self.engine.optimizer, "optimizer", self.engine.optimizer)
        states = getattr(inner, "state", {})
        if not states:
            return ()
        first = next(iter(states.values()))
        return tuple(k for k in MOMENT_KEYS if k in first)


def _partition_mask(param: nn.Parameter, mask: Tensor) -> Tensor:
    """The mask over this rank's ZeRO-3 partition; its padding entries are left alone (True)."""
    start, length = owned_range(param, mask.numel())
    local = torch.ones(param.ds_tensor.ds_numel, dtype=param.ds_tensor.dtype, device=param.ds_tensor.device)
    local[:length] = mask.reshape(-1)[start : start + length].to(local)
    return local


@torch.no_grad()
def pruned_nonzeros(engine, masks: MaskSet) -> dict[str, int]:
    """name -> number of pruned entries that are not exactly 0.0, over all ranks; collective.

    Checks the module weight (ZeRO-3: the rank's working partition) and the fp32 master.
    """
    params = dict(engine.module.named_parameters())
    counts = []
    for name, mask in masks.masks.items():
        param = params[name]
        if is_partitioned(param):
            start, length = owned_range(param, mask.numel())
            pruned = ~mask.reshape(-1)[start : start + length]
            working = param.ds_tensor.reshape(-1)[:length].cpu()
            master = safe_get_local_fp32_param(param).reshape(-1)[:length].cpu()
            counts.append(int((working[pruned] != 0).sum()) + int((master[pruned] != 0).sum()))
        else:
            pruned = ~mask.to(param.device)
            bad = int((param.detach()[pruned] != 0).sum())
            if hasattr(param, "_hp_mapping"):
                bad += int((safe_get_full_fp32_param(param)[pruned] != 0).sum())
            counts.append(bad if dist.rank() == 0 else 0)  # replicated: count one copy
    total = dist.all_reduce_tensor(torch.tensor(counts, dtype=torch.long))
    return dict(zip(masks.masks, total.tolist(), strict=True))


def verify_pruned(engine, masks: MaskSet) -> None:
    """Raise MaskViolation naming the parameters whose pruned entries are not 0.0; collective."""
    bad = {name: count for name, count in pruned_nonzeros(engine, masks).items() if count}
    if bad:
        raise MaskViolation(f"pruned weights revived (non-zero count per parameter): {bad}")
