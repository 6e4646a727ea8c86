"""Keep a ticket on a DeepSpeed engine the user built with ``deepspeed.initialize``, under ZeRO 0-3.

The work is `lottery.sparsity.enforce.MaskEnforcer`'s, as in our own runs: it zeroes every copy the
engine keeps (working weight, fp32 master, Adam moments) and masks gradients. Under ZeRO-3 gradients
are reduce-scattered inside backward, so it must mask each rank's partition between ``backward`` and
``step`` (`MaskEnforcer.before_step`). A user's loop should not have to know that, so the handle wraps
this engine's ``step``: the usual ``engine.backward(loss); engine.step()`` stays as it is.

Covered: the optimizers whose update is 0 where the gradient and the Adam moments are 0 (a torch
Adam/AdamW or SGD without momentum as the client optimizer, DeepSpeed's Adam/AdamW). SGD momentum
buffers carried from before the ticket are not zeroed; `verify()` says when zeros were lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lottery.api.naming import TicketLike, bind_masks, describe
from lottery.sparsity.enforce import MaskEnforcer, pruned_nonzeros, verify_pruned
from lottery.sparsity.maskset import MaskSet


class EngineTicket:
    """A ticket kept on a DeepSpeed engine until `remove()`; built by `keep_ticket_on_engine`.

    `masks` is the ticket under the engine's parameter names.
    """

    def __init__(self, engine: Any, masks: MaskSet, source: str) -> None:
        self.engine = engine
        self.masks = masks
        self.source = source
        self.enforcer = MaskEnforcer(engine, masks)
        self._own_step = "step" in vars(engine)  # a step set on the instance before us (another wrapper)
        self._previous_step: Callable[..., Any] = engine.step
        engine.step = self._step

    def _step(self, *args: Any, **kwargs: Any) -> Any:
        self.enforcer.before_step()
        return self._previous_step(*args, **kwargs)

    @property
    def sparsity(self) -> float:
        """Fraction of the ticket's weights that are pruned."""
        return self.masks.sparsity

    def verify(self, strict: bool = True) -> int:
        """Pruned entries not 0.0 in any copy (weight, fp32 master, moments), summed over ranks; collective.

        With `strict` a non-zero count raises `MaskViolation` naming the parameters, on every rank.
        """
        total = sum(sum(where.values()) for where in pruned_nonzeros(self.engine, self.masks).values())
        if total and strict:
            verify_pruned(self.engine, self.masks, f"on {self.source}")  # every rank sees the same total
        return total

    def remove(self) -> None:
        """Stop keeping the ticket and give the engine its own ``step`` back."""
        self.enforcer.remove()
        if vars(self.engine).get("step") == self._step:
            if self._own_step:
                self.engine.step = self._previous_step
            else:
                del self.engine.step


def keep_ticket_on_engine(
    engine: Any, ticket: TicketLike, rename: Mapping[str, str] | None = None
) -> EngineTicket:
    """Apply `ticket` to a ``deepspeed.initialize`` engine and keep it for every later ``engine.step()``.

    Call it on every rank, after ``deepspeed.initialize`` (and after ``engine.load_checkpoint``, which
    replaces the optimizer's tensors), before the first step. `rename` as in `apply_ticket`. Raises
    `TicketMismatch` on every rank alike when the ticket does not fit ``engine.module``.
    """
    masks, _ = bind_masks(ticket, dict(engine.module.named_parameters()), rename)
    return EngineTicket(engine, masks, describe(ticket))
