"""Whether a ticket fits a model: its scope and its fingerprint against the model's.

Kept apart from the store: the checks run on a loaded ticket (every use) and on a ticket's header alone
(a job's preflight, on every rank, before the one verified read rank 0 broadcasts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lottery.tickets.format import Ticket, TicketError, scope_text


def check_model(
    ticket: Ticket,
    *,
    fingerprint: str | Callable[[tuple[str, ...]], str] | None = None,
    scope: Sequence[str] | None = None,
    model_name: str | None = None,
) -> None:
    """Refuse a ticket whose scope or fingerprint is not the model's (each check only when given)."""
    cut_from = f"{ticket.meta.family} {ticket.meta.model}"
    check_layout(
        ticket.source,
        ticket.masks.scope,
        ticket.masks.fingerprint,
        cut_from,
        fingerprint=fingerprint,
        scope=scope,
        model_name=model_name,
    )


def check_layout(
    source: str,
    ticket_scope: tuple[str, ...],
    ticket_fingerprint: str,
    cut_from: str,
    *,
    fingerprint: str | Callable[[tuple[str, ...]], str] | None = None,
    scope: Sequence[str] | None = None,
    model_name: str | None = None,
) -> None:
    """`check_model` on a ticket's layout alone (from a loaded ticket, or from its header before a job).

    The scope is checked first: a different scope also changes the fingerprint, and saying so is the
    more useful message. `fingerprint` may be a function of a scope (the model's `fingerprint`): it is
    then asked for the fingerprint under the ticket's own scope, for runs that train any ticket's scope.
    """
    if scope is not None and tuple(scope) != ticket_scope:
        raise TicketError(
            f"{source}: scope check failed: scope differs: the ticket's is {scope_text(ticket_scope)}, "
            f"the run's is {scope_text(scope)}; use a ticket cut with the run's scope, or set the run's scope "
            "to the ticket's (sparsity.scope, or leave it empty to take the ticket's)"
        )
    if callable(fingerprint):
        fingerprint = fingerprint(ticket_scope)
    if fingerprint is not None and fingerprint != ticket_fingerprint:
        raise TicketError(
            f"{source}: fingerprint check failed: fingerprint {ticket_fingerprint[:12]}… "
            f"(cut from {cut_from}) does not match model "
            f"{model_name or '(unnamed)'} ({fingerprint[:12]}…); was it cut from another model or scope?"
        )
