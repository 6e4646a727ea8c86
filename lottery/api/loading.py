"""Load a ticket for a user's own training code: from a ticket store by id, prefix or alias, or from a file."""

from __future__ import annotations

import os
from pathlib import Path

from lottery.tickets.format import Ticket, TicketError, read_ticket
from lottery.tickets.store import TicketStore, default_root

TICKET_SUFFIX = ".safetensors"


def load_ticket(
    ref: str | os.PathLike[str], store: TicketStore | str | os.PathLike[str] | None = None
) -> Ticket:
    """The ticket `ref`, after the format, layout and fingerprint checks (and the hash check in a store).

    `ref` is a file when it is a ``Path``, ends in ``.safetensors`` or names an existing file; otherwise
    it is a ticket id, a unique id prefix (4+ hex digits) or an alias in `store` (a `TicketStore` or its
    root; default `$LOTTERY_TICKET_STORE`, else ``tickets/``). Whether the ticket fits a model is
    checked where it is applied (`apply_ticket`), since only the model knows its parameter names.
    """
    if isinstance(ref, os.PathLike) or str(ref).endswith(TICKET_SUFFIX) or Path(ref).is_file():
        return _read_file(Path(ref))
    if not isinstance(store, TicketStore):
        store = TicketStore(default_root() if store is None else store)
    return store.load(str(ref))


def _read_file(path: Path) -> Ticket:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TicketError(f"{path}: no such ticket file") from None
    except OSError as err:
        raise TicketError(f"{path}: cannot read the ticket: {err.strerror}") from None
    return read_ticket(data, str(path))
