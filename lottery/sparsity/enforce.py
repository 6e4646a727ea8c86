"""Keep pruned weights at exactly 0.0 on a DeepSpeed engine, under ZeRO 0-3 (and offload), fp32/bf16/fp16.

Zeroing weights once is not enough: AdamW moves a weight whose gradient or moments are non-zero, and
the optimizer updates an fp32 master that is copied into the module after each step. So the enforcer:
- at install (and at every mask change) zeroes the pruned entries of every copy the engine keeps on
  this rank: working weight, fp32 master and Adam moments (`slots.py` knows where each wrapper keeps
  them);
- masks every gradient before the optimizer sees it, so that clipping sees the sparse gradient and
  Adam's update there is 0 / (0 + eps) = 0 and decoupled weight decay scales 0.

Where the gradient is reachable differs by stage. ZeRO 0-2 keep whole weights on every rank: a
post-accumulate-grad hook masks `param.grad` in place as soon as autograd has accumulated it, and it
is moved to the front of the parameter's hooks, so it runs before the hooks DeepSpeed registered when
the engine was built (ZeRO 1-2 reduce the gradient there, BF16_Optimizer moves it into its fp32
buffer); the all-reduce, unscaling and clipping then see the sparse gradient. In place matters: a hook
that returns `grad * mask` allocates a gradient-sized tensor per parameter per step, which the
mask-overhead benchmark's profile found to be most of the mask's cost (benchmarks/RESULTS.md). ZeRO-3 gradients are reduce-scattered into partitions inside
backward, so `before_step` masks each rank's own partition, in place where DeepSpeed hands out a view
of it, between `backward` and `step`; nothing gathers a parameter. The masks are kept on the device
and in the dtype of the tensor they multiply (offload puts the master on the CPU and the working
weight on the GPU).

`verify_pruned` is the proof: it counts, on every rank, pruned entries that are not 0.0 in any copy.
"""

from __future__ import annotations

import os
from collections import OrderedDict
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
        self._stored: dict[str, bool] = {}  # name -> ZeRO-3 hands out a view of its gradient partition
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
            self._hooks = [_hook_first(self.params[n], self._grad_hook(n)) for n in masks.masks]

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

    def _grad_hook(self, name: str) -> Callable[[Tensor], None]:
        def mask_gradient(param: Tensor) -> None:
            if param.grad is not None:
                param.grad.mul_(self.mask_like(name, param.grad))

        return mask_gradient

    def before_step(self) -> None:
        """Mask this rank's gradient partitions (ZeRO-3) at an accumulation boundary; a no-op otherwise."""
        if self.broken or not self.partitioned or not self.engine.is_gradient_accumulation_boundary():
            return
        from deepspeed.utils import safe_get_local_grad, safe_set_local_grad

        offload = bool(getattr(self.engine.optimizer, "offload_optimizer", False))
        for name in self._flat:
            param = self.params[name]
            grad = safe_get_local_grad(param)
            if grad is None:
                continue
            grad.mul_(self._partition_mask(name, grad))
            if offload or not self._is_stored(name, grad):
                # a copy (another device or dtype), or offload, whose per-parameter gradient norm
                # DeepSpeed caches for clipping in `set`: hand the masked partition back
                safe_set_local_grad(param, grad)

    def _is_stored(self, name: str, grad: Tensor) -> bool:
        """Whether DeepSpeed's `safe_get_local_grad` gave a view of the stored partition (then masking
        it in place is enough) or a copy. Asked once per parameter: two gets alive together share
        their memory only if neither is a fresh copy."""
        from deepspeed.utils import safe_get_local_grad

        if name not in self._stored:
            again = safe_get_local_grad(self.params[name])
            self._stored[name] = again is not None and again.data_ptr() == grad.data_ptr()
        return self._stored[name]

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


def _hook_first(param: Tensor, hook: Callable[[Tensor], None]) -> torch.utils.hooks.RemovableHandle:
    """Register `hook` after gradient accumulation on `param`, ahead of the hooks already there.

    torch runs post-accumulate-grad hooks in the order of the tensor's `_post_accumulate_grad_hooks`
    dict; DeepSpeed's were registered first, at engine build. If a torch version keeps them otherwise,
    refuse rather than mask after DeepSpeed has consumed the gradient.
    """
    handle = param.register_post_accumulate_grad_hook(hook)
    hooks = getattr(param, "_post_accumulate_grad_hooks", None)
    if not isinstance(hooks, OrderedDict) or handle.id not in hooks:
        handle.remove()
        raise NotImplementedError(
            f"torch {torch.__version__} keeps post-accumulate-grad hooks where the mask enforcer cannot "
            "put its hook first; lottery/sparsity/enforce.py needs updating for it"
        )
    hooks.move_to_end(handle.id, last=False)
    return handle


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
