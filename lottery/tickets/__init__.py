"""Ticket file format (bit-packed masks + provenance) and the content-addressed ticket store."""

from lottery.tickets.distributed import load_broadcast
from lottery.tickets.format import (
    FORMAT_VERSION,
    Ticket,
    TicketError,
    TicketMeta,
    read_header,
    read_ticket,
    ticket_bytes,
    ticket_id,
)
from lottery.tickets.store import STORE_ENV, StoreEntry, TicketStore, check_alias, check_model, default_root

__all__ = [
    "FORMAT_VERSION",
    "STORE_ENV",
    "StoreEntry",
    "Ticket",
    "TicketError",
    "TicketMeta",
    "TicketStore",
    "check_alias",
    "check_model",
    "default_root",
    "load_broadcast",
    "read_header",
    "read_ticket",
    "ticket_bytes",
    "ticket_id",
]
