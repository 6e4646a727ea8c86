"""Keep a ticket's pruned weights at exactly 0.0 on a plain torch model, under any torch optimizer.

Zeroing the weights once is not enough: a gradient, a momentum or an Adam moment carried from before
the ticket moves a zeroed weight at the next step. So a `TicketHandle`

- zeroes the pruned entries of every weight (and of a gradient or optimizer state already there);
- masks each gradient as autograd produces it (a tensor hook), before clipping, accumulation and any
  data-parallel all-reduce see it;
- after every ``optimizer.step()`` (a step post-hook on the torch optimizer) sets the pruned entries of
  the weights and of every weight-shaped optimizer state tensor (``exp_avg``, ``momentum_buffer``, ...)
  back to 0.0, so no optimizer, whatever its update rule, can leave a pruned weight non-zero.

For models whose optimizer keeps other copies (DeepSpeed's fp32 masters and ZeRO partitions) see
`lottery.api.deepspeed_engine`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lottery.api.naming import TicketLike, bind_masks, describe
from lottery.sparsity.maskset import MaskSet

_SHOWN = 4  # parameters detailed in a violation message


def torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside wrappers that keep it in ``.optimizer`` (accelerate's AcceleratedOptimizer).

    The step post-hook must sit on the optimizer whose ``step`` updates the weights: a wrapper's own
    hooks do not run when it delegates. A wrapper around something that is not a torch optimizer (a
    DeepSpeed ZeRO optimizer, with its own fp32 masters) is refused.
    """
    inner = optimizer
    while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
        inner = inner.optimizer
    if not isinstance(inner, torch.optim.Optimizer) or getattr(inner, "optimizer", None) is not None:
        held = type(getattr(inner, "optimizer", inner)).__name__
        raise TypeError(
            f"optimizer {type(optimizer).__name__}: holds {held}, not a torch.optim.Optimizer; the ticket is "
            "kept by a step hook on the torch optimizer (for a DeepSpeed engine use "
            "lottery.api.keep_ticket_on_engine)"
        )
    return inner


class TicketHandle:
    """A ticket applied to a model: keeps its pruned weights at 0.0 until `remove()`.

    Built by `apply_ticket`. `masks` is the ticket under the model's parameter names.
    """

    def __init__(
        self,
        masks: MaskSet,
        params: Mapping[str, nn.Parameter],
        optimizer: torch.optim.Optimizer | None,
        source: str,
    ) -> None:
        self.masks = masks
        self.params = dict(params)
        self.optimizer = optimizer
        self.source = source
        self._pruned = {name: ~mask for name, mask in masks.masks.items()}  # CPU bool, True = pruned
        self._pruned_on: dict[tuple[str, torch.device], Tensor] = {}
        self._hooks: list[RemovableHandle] = []
        self.zero_pruned()
        for name, param in self.params.items():
            if param.requires_grad:
                self._hooks.append(param.register_hook(self._gradient_mask(name)))
        if optimizer is not None:
            self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.zero_pruned()))

    @property
    def sparsity(self) -> float:
        """Fraction of the ticket's weights that are pruned (of the masked parameters, not the model)."""
        return self.masks.sparsity

    def pruned_like(self, name: str, tensor: Tensor) -> Tensor:
        """`name`'s pruned-entries mask on `tensor`'s device, made once per device (the per-step path)."""
        key = (name, tensor.device)
        local = self._pruned_on.get(key)
        if local is None:
            local = self._pruned[name].to(tensor.device)
            self._pruned_on[key] = local
        return local

    def _gradient_mask(self, name: str):
        def mask_gradient(grad: Tensor) -> Tensor:
            return grad.masked_fill(self.pruned_like(name, grad), 0)

        return mask_gradient

    @torch.no_grad()
    def zero_pruned(self) -> None:
        """Set the pruned entries of every weight, gradient and weight-shaped optimizer state to 0.0.

        Runs after every optimizer step; call it yourself after writing weights outside the optimizer
        (``load_state_dict``, an EMA copy-back).
        """
        for name, param in self.params.items():
            pruned = self.pruned_like(name, param)
            param.masked_fill_(pruned, 0)
            if param.grad is not None:
                param.grad.masked_fill_(pruned, 0)
            for _, value in self._state_tensors(param):
                value.masked_fill_(pruned, 0)

    def _state_tensors(self, param: nn.Parameter) -> Iterator[tuple[str, Tensor]]:
        """(key, tensor) of the optimizer's state for `param` that has the weight's shape."""
        if self.optimizer is None:
            return
        for key, value in self.optimizer.state.get(param, {}).items():
            if isinstance(value, Tensor) and value.shape == param.shape and value is not param:
                yield key, value

    @torch.no_grad()
    def nonzero_pruned(self) -> dict[str, dict[str, int]]:
        """name -> {where: pruned entries not exactly 0.0}, only for parameters with any.

        `where` is ``weight`` or an optimizer state key (``exp_avg``, ``momentum_buffer``, ...).
        """
        found: dict[str, dict[str, int]] = {}
        for name, param in self.params.items():
            pruned = self.pruned_like(name, param)
            counts = {"weight": int(torch.count_nonzero(param[pruned]))}
            for key, value in self._state_tensors(param):
                counts[key] = int(torch.count_nonzero(value[pruned]))
            bad = {where: count for where, count in counts.items() if count}
            if bad:
                found[name] = bad
        return found

    def verify(self, strict: bool = True) -> int:
        """The number of pruned entries that are not 0.0 (weights and optimizer state); 0 when the ticket holds.

        With `strict` (the default) a non-zero count raises `MaskViolation` naming the parameters.
        """
        bad = self.nonzero_pruned()
        total = sum(sum(where.values()) for where in bad.values())
        if total and strict:
            from lottery.sparsity.enforce import MaskViolation  # imports DeepSpeed: only on the failure path

            details = "; ".join(
                f"{name}: " + ", ".join(f"{count} in {where}" for where, count in where_counts.items())
                for name, where_counts in list(bad.items())[:_SHOWN]
            )
            more = f" (+{len(bad) - _SHOWN} more parameters)" if len(bad) > _SHOWN else ""
            raise MaskViolation(
                f"{self.source}: {total} pruned entries are not 0.0 in {len(bad)} parameter(s): {details}{more}; "
                "were weights written outside the optimizer after apply_ticket (call handle.zero_pruned()), "
                "or the handle removed?"
            )
        return total

    def remove(self) -> None:
        """Stop keeping the ticket (the weights stay as they are); calling it twice is harmless."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def apply_ticket(
    model: nn.Module,
    ticket: TicketLike,
    rename: Mapping[str, str] | None = None,
    optimizer: Any = None,
) -> TicketHandle:
    """Zero `model`'s pruned weights and keep them exactly 0.0 through training; returns the handle.

    `ticket`: a `Ticket` (see `load_ticket`) or a `MaskSet`. `rename`: ticket name prefix -> model name
    prefix, e.g. ``{"uniter.": "bert."}`` for a HF BERT. `optimizer`: the torch optimizer that trains
    `model` (or a wrapper holding it in ``.optimizer``, as accelerate's). Without it only gradients are
    masked, which keeps the zeros under Adam/AdamW/SGD started after this call, but not under state
    carried from before it or an optimizer that moves a weight without a gradient: pass it.

    Raises `TicketMismatch` when the ticket names parameters the model lacks or shapes differ.
    """
    masks, params = bind_masks(ticket, dict(model.named_parameters(remove_duplicate=False)), rename)
    inner = None if optimizer is None else torch_optimizer(optimizer)
    if inner is not None:
        trained = {id(p) for group in inner.param_groups for p in group["params"]}
        if not any(id(p) in trained for p in params.values() if p.requires_grad):
            raise ValueError(
                f"{describe(ticket)}: the optimizer ({type(inner).__name__}) trains none of the ticket's "
                "parameters; pass the optimizer built on this model's parameters"
            )
    return TicketHandle(masks, params, inner, describe(ticket))
