"""Keep pruned weights at exactly 0.0 on a DeepSpeed engine, under ZeRO 0-3 (and offload), fp32/bf16/fp16.

Zeroing weights once is not enough: AdamW moves a weight whose gradient or moments are non-zero, and
the optimizer updates an fp32 master that is copied into the module after each step. So the enforcer:
- at install (and at every mask change) zeroes the pruned entries of every copy the engine keeps on
  this rank: working weight, fp32 master and Adam moments (`slots.py` knows where each wrapper keeps
  them);
- masks every gradient before the optimizer sees it, so that clipping sees the sparse gradient and
  Adam's update there is 0 / (0 + eps) = 0 and decoupled weight decay scales 0.

Where the gradient is reachable differs by stage. ZeRO 0-2 keep whole weights on every rank, and a
tensor hook masks each gradient as autograd produces it, before DeepSpeed reduces, unscales or
accumulates it (also into a bf16/fp16 wrapper's fp32 twin). ZeRO-3 gradients are reduce-scattered into
partitions inside backward, so `before_step` masks each rank's own partition between `backward` and
`step`; nothing gathers a parameter. The masks are kept on the device and in the dtype of the tensor
they multiply (offload puts the master on the CPU and the working weight on the GPU).

`verify_pruned` is the proof: it counts, on every rank, pruned entries that are not 0.0 in any copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor

from lottery import dist
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.partition import is_partitioned, owned_range
from lottery.sparsity.slots import WHERES, pruned_nonzero_counts, wrapper_name, zero_pruned

# Test switch: "1" makes the enforcer leave gradients unmasked, as a broken enforcer would, so tests can
# show that the default verification stops the run before any ticket is written. Never set it otherwise.
BREAK_ENV = "LOTTERY_TEST_BREAK_ENFORCER"


class MaskViolation(RuntimeError):
    """A pruned weight is not exactly 0.0 in some copy (module weight, fp32 master, Adam moment)."""


class MaskEnforcer:
    """Installs a MaskSet on an engine and keeps it; `before_step` must run between backward and step."""

    def __init__(self, engine, masks: MaskSet) -> None:
        self.engine = engine
        self.params = dict(engine.module.named_parameters())
        missing = [n for n in masks.masks if n not in self.params]
        if missing:
            raise KeyError(f"mask names parameters the model does not have: {missing[:5]}")
        self.partitioned = any(is_partitioned(self.params[n]) for n in masks.masks)
        self.broken = os.environ.get(BREAK_ENV) == "1"
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._flat: dict[str, Tensor] = {}  # name -> the flattened full bool mask (CPU)
        self._device_masks: dict[tuple, Tensor] = {}  # (name, device, dtype, range) -> mask slice there
        self.masks = masks
        self.install(masks)

    def install(self, masks: MaskSet) -> None:
        """Make `masks` the enforced mask (it may prune more than the current one); not collective."""
        self.masks = masks
        self._flat = {name: mask.reshape(-1) for name, mask in masks.masks.items()}
        self._device_masks.clear()
        for name, mask in masks.masks.items():
            zero_pruned(self.engine, self.params[name], mask)
        if not self.partitioned and not self._hooks and not self.broken:
            self._hooks = [self.params[n].register_hook(self._grad_hook(n)) for n in masks.masks]

    def mask_like(self, name: str, tensor: Tensor, start: int = 0) -> Tensor:
        """`name`'s mask over flattened entries [start, start + tensor.numel()), on `tensor`'s device
        and in its dtype, converted once and then reused (the per-step path)."""
        key = (name, tensor.device, tensor.dtype, start, tensor.numel())
        local = self._device_masks.get(key)
        if local is None:
            flat = self._flat[name].narrow(0, start, tensor.numel())
            local = flat.to(device=tensor.device, dtype=tensor.dtype).view(tensor.shape)
            self._device_masks[key] = local
        return local

    def _grad_hook(self, name: str) -> Callable[[Tensor], Tensor]:
        def mask_gradient(grad: Tensor) -> Tensor:
            return grad * self.mask_like(name, grad)

        return mask_gradient

    def before_step(self) -> None:
        """Mask this rank's gradient partitions (ZeRO-3) at an accumulation boundary; a no-op otherwise."""
        if self.broken or not self.partitioned or not self.engine.is_gradient_accumulation_boundary():
            return
        from deepspeed.utils import safe_get_local_grad, safe_set_local_grad

        for name in self._flat:
            param = self.params[name]
            grad = safe_get_local_grad(param)
            if grad is not None:
                safe_set_local_grad(param, grad * self._partition_mask(name, grad))

    def _partition_mask(self, name: str, grad: Tensor) -> Tensor:
        """The mask over this rank's ZeRO-3 gradient partition, its padding past the parameter left 1."""
        key = (name, "partition", grad.device, grad.dtype, grad.numel())
        local = self._device_masks.get(key)
        if local is None:
            start, length = owned_range(self.params[name], self._flat[name].numel())
            local = torch.ones(grad.numel(), dtype=grad.dtype, device=grad.device)
            local[:length] = self._flat[name].narrow(0, start, length).to(local)
            local = local.view(grad.shape)
            self._device_masks[key] = local
        return local

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def pruned_nonzeros(engine, masks: MaskSet) -> dict[str, dict[str, int]]:
    """name -> {where: pruned entries not exactly 0.0}, summed over ranks; collective.

    `where` is each copy the engine keeps: ``weight``, ``master``, ``exp_avg``, ``exp_avg_sq``.
    """
    params = dict(engine.module.named_parameters())
    wheres = WHERES
    local = []
    for name, mask in masks.masks.items():
        counts = pruned_nonzero_counts(engine, params[name], mask)
        local.append([counts.get(w, 0) for w in wheres])
    total = dist.all_reduce_tensor(torch.tensor(local, dtype=torch.long).reshape(-1, len(wheres)))
    return {
        name: {w: int(c) for w, c in zip(wheres, row.tolist(), strict=True) if c}
        for name, row in zip(masks.masks, total, strict=True)
    }


def verify_pruned(engine, masks: MaskSet, when: str = "") -> None:
    """Raise MaskViolation naming each parameter whose pruned entries are not all 0.0; collective.

    Every rank raises the same error (the counts are all-reduced), so no rank waits for a failed peer.
    """
    bad = {name: where for name, where in pruned_nonzeros(engine, masks).items() if where}
    if not bad:
        return
    total = sum(sum(where.values()) for where in bad.values())
    first = next(iter(bad))
    details = "; ".join(
        f"{name}: " + ", ".join(f"{count} in {where}" for where, count in where_counts.items())
        for name, where_counts in list(bad.items())[:4]
    )
    more = f" (+{len(bad) - 4} more parameters)" if len(bad) > 4 else ""
    raise MaskViolation(
        f"mask violated{' ' + when if when else ''}: {total} pruned entries are not 0.0 in {len(bad)} "
        f"parameter(s), first {first} (optimizer {wrapper_name(engine)}): {details}{more}; the ticket "
        "would be wrong, so the run stops before writing one"
    )
