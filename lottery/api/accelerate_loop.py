"""Keep a ticket in a hand-written accelerate loop, on the objects ``accelerator.prepare`` returns.

``prepare`` may wrap the model (DistributedDataParallel, ``torch.compile``) and always wraps the
optimizer (AcceleratedOptimizer, which skips steps while gradients accumulate). Both wrappers share the
parameters of the plain model, so the ticket is bound by the plain model's names (as
``accelerator.unwrap_model`` gives them) and the step hook sits on the torch optimizer inside.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from accelerate.utils import extract_model_from_parallel
from torch import nn

from lottery.api.masking import TicketHandle, apply_ticket
from lottery.api.naming import TicketLike, describe
from lottery.tickets.format import TicketError


def keep_ticket(
    model: nn.Module, optimizer: Any, ticket: TicketLike, rename: Mapping[str, str] | None = None
) -> TicketHandle:
    """Apply `ticket` to a prepared `model` and keep it through `optimizer` (both from ``accelerator.prepare``).

    Call it after ``prepare`` and before the first step. The loop itself does not change: backward
    through ``accelerator.backward`` and ``optimizer.step()`` / ``zero_grad()`` as usual.
    """
    if _is_deepspeed_engine(model):
        raise TicketError(
            f"{describe(ticket)}: the prepared model is a DeepSpeed engine, whose optimizer updates fp32 "
            "masters keep_ticket cannot reach; use lottery.api.keep_ticket_on_engine(engine, ticket, rename)"
        )
    plain = extract_model_from_parallel(model, keep_torch_compile=False)
    return apply_ticket(plain, ticket, rename, optimizer=optimizer)


def _is_deepspeed_engine(model: nn.Module) -> bool:
    deepspeed = sys.modules.get("deepspeed")  # an engine exists only if DeepSpeed was imported
    return deepspeed is not None and isinstance(model, deepspeed.DeepSpeedEngine)
