"""Use a ticket in your own training code: load it, apply it, keep its pruned weights at exactly 0.0.

One entry per way of training: `apply_ticket` (plain torch), `TicketCallback` (HF ``Trainer``),
`keep_ticket` (accelerate loop), `keep_ticket_on_engine` (``deepspeed.initialize``). Names are
imported on first use, so ``import lottery.api`` loads neither torch nor transformers until then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "EngineTicket": "lottery.api.deepspeed_engine",
    "TicketCallback": "lottery.api.hf_trainer",
    "TicketHandle": "lottery.api.masking",
    "TicketMismatch": "lottery.api.naming",
    "apply_ticket": "lottery.api.masking",
    "keep_ticket": "lottery.api.accelerate_loop",
    "keep_ticket_on_engine": "lottery.api.deepspeed_engine",
    "load_ticket": "lottery.api.loading",
}

__all__ = [
    "EngineTicket",
    "TicketCallback",
    "TicketHandle",
    "TicketMismatch",
    "apply_ticket",
    "keep_ticket",
    "keep_ticket_on_engine",
    "load_ticket",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from lottery.api.accelerate_loop import keep_ticket
    from lottery.api.deepspeed_engine import EngineTicket, keep_ticket_on_engine
    from lottery.api.hf_trainer import TicketCallback
    from lottery.api.loading import load_ticket
    from lottery.api.masking import TicketHandle, apply_ticket
    from lottery.api.naming import TicketMismatch
