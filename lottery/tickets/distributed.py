"""Load a ticket once for a whole job: rank 0 reads and verifies it, every rank gets the same bytes.

A shared file system read by hundreds of ranks at once is slow and can see different states of an
alias being updated; one read broadcast to all ranks is fast and gives every rank the same ticket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lottery import dist
from lottery.tickets.format import Ticket, TicketError, read_ticket
from lottery.tickets.store import TicketStore, check_model


def load_broadcast(
    store_root: str | Path,
    ref: str,
    *,
    expect_fingerprint: str | Callable[[tuple[str, ...]], str] | None,
    expect_scope: Sequence[str] | None,
    model_name: str | None = None,
) -> Ticket:
    """The ticket `ref` of the store at `store_root` on every rank (collective: call it on every rank).

    Rank 0 runs every check of `TicketStore.load`; if one fails, every rank raises a TicketError with
    rank 0's message instead of waiting for bytes that never come. Works without torch.distributed.
    """
    status: tuple[str | None, str] = (None, "")
    ticket: Ticket | None = None
    data: bytes | None = None
    cause: Exception | None = None
    if dist.is_main():
        try:
            _, path, data = TicketStore(store_root).read_verified(ref)
            ticket = read_ticket(data, str(path))
            check_model(ticket, fingerprint=expect_fingerprint, scope=expect_scope, model_name=model_name)
            status = (None, str(path))
        except Exception as err:  # any failure on rank 0 must reach the other ranks, or they hang
            cause = err
            status = (
                str(err) if isinstance(err, TicketError) else f"{store_root}: {type(err).__name__}: {err}",
                "",
            )
    error, source = dist.broadcast_object(status)
    if error is not None:
        raise TicketError(error) from cause
    data = dist.broadcast_bytes(data)
    if ticket is not None:
        return ticket
    return read_ticket(data, source)
