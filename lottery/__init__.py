"""vl-lottery: find lottery tickets in vision-and-language transformers on DeepSpeed.

The names of `lottery.api` (``load_ticket``, ``apply_ticket``, ``TicketCallback``, ...) are also
reachable here, imported on first use: every ``python -m lottery`` command imports this file, so it
must not pull in torch or transformers (``lottery.api`` itself imports neither until asked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lottery.api import __all__ as _API_NAMES

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # an AttributeError for any other name lets `from lottery import dist` import the submodule
    if name not in _API_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from lottery import api

    return getattr(api, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_API_NAMES})


if TYPE_CHECKING:
    from lottery.api import EngineTicket as EngineTicket
    from lottery.api import TicketCallback as TicketCallback
    from lottery.api import TicketHandle as TicketHandle
    from lottery.api import TicketMismatch as TicketMismatch
    from lottery.api import apply_ticket as apply_ticket
    from lottery.api import keep_ticket as keep_ticket
    from lottery.api import keep_ticket_on_engine as keep_ticket_on_engine
    from lottery.api import load_ticket as load_ticket
