"""Ticket file format (bit-packed masks + provenance) and the content-addressed ticket store.

The names below are imported from their modules on first use (PEP 562), not with the package: the
format and the store need numpy, safetensors and torch, and `lottery ticket --help` must not wait
for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "load_broadcast": "lottery.tickets.distributed",
    **dict.fromkeys(
        (
            "FORMAT_VERSION",
            "Ticket",
            "TicketError",
            "TicketMeta",
            "read_header",
            "read_ticket",
            "ticket_bytes",
            "ticket_id",
        ),
        "lottery.tickets.format",
    ),
    **dict.fromkeys(
        ("STORE_ENV", "StoreEntry", "TicketStore", "check_alias", "check_model", "default_root"),
        "lottery.tickets.store",
    ),
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:  # lets `from lottery.tickets import jobs` import the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


if TYPE_CHECKING:
    from lottery.tickets.distributed import load_broadcast as load_broadcast
    from lottery.tickets.format import FORMAT_VERSION as FORMAT_VERSION
    from lottery.tickets.format import Ticket as Ticket
    from lottery.tickets.format import TicketError as TicketError
    from lottery.tickets.format import TicketMeta as TicketMeta
    from lottery.tickets.format import read_header as read_header
    from lottery.tickets.format import read_ticket as read_ticket
    from lottery.tickets.format import ticket_bytes as ticket_bytes
    from lottery.tickets.format import ticket_id as ticket_id
    from lottery.tickets.store import STORE_ENV as STORE_ENV
    from lottery.tickets.store import StoreEntry as StoreEntry
    from lottery.tickets.store import TicketStore as TicketStore
    from lottery.tickets.store import check_alias as check_alias
    from lottery.tickets.store import check_model as check_model
    from lottery.tickets.store import default_root as default_root
