"""Map a ticket's parameter names onto a user's model, and refuse a ticket that does not fit it.

Our tickets name parameters as our models do (``uniter.encoder.layer.0.attention.self.query.weight``);
a user's model may hold the same weights under another prefix (HF BERT: ``bert.encoder.layer.0...``).
``rename`` maps name prefixes of the ticket to the model's, so the user never edits a ticket. Every
mismatch is reported at once, with a guessed rename, so one failed run tells the user what to pass.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import parameter_shape
from lottery.tickets.format import Ticket, TicketError
from lottery.tickets.renaming import RenameCollision, rename_all, renamed

TicketLike = Ticket | MaskSet
_SHOWN = 5  # names listed in a mismatch message before "+N more"


class TicketMismatch(TicketError):
    """A ticket whose names (after ``rename``) or shapes are not those of the model it is applied to."""


def ticket_masks(ticket: TicketLike) -> MaskSet:
    """The MaskSet of a ticket, or the MaskSet itself."""
    return ticket.masks if isinstance(ticket, Ticket) else ticket


def describe(ticket: TicketLike) -> str:
    """How messages name a ticket: its short id and file, or a bare MaskSet's fingerprint."""
    if isinstance(ticket, Ticket):
        return f"ticket {ticket.id[:12]} ({ticket.source})"
    return f"MaskSet {ticket.fingerprint[:12]}"


def bind_masks(
    ticket: TicketLike, params: Mapping[str, nn.Parameter], rename: Mapping[str, str] | None = None
) -> tuple[MaskSet, dict[str, nn.Parameter]]:
    """The ticket's masks under the model's names, and name -> the model parameter each one prunes.

    `params` is the model's ``named_parameters()``; extra model parameters are fine (they stay
    dense). Raises `TicketMismatch` naming the first missing parameters, their count, every shape
    mismatch and, when one can be guessed from the model's names, the rename that would fit.
    """
    masks = ticket_masks(ticket)
    rename = dict(rename or {})
    try:
        by_model_name = rename_all(masks.masks, rename)  # model name -> ticket name
    except RenameCollision as err:
        raise TicketMismatch(f"{describe(ticket)}: {err}") from None
    missing = [target for target in by_model_name if target not in params]
    shapes = [
        (target, tuple(masks.masks[name].shape), parameter_shape(params[target]))
        for target, name in by_model_name.items()
        if target in params and tuple(masks.masks[name].shape) != parameter_shape(params[target])
    ]
    if missing or shapes:
        raise TicketMismatch(_mismatch_message(ticket, by_model_name, missing, shapes, params, rename))
    bound = MaskSet({target: masks.masks[name] for target, name in by_model_name.items()}, masks.scope)
    return bound, {target: params[target] for target in by_model_name}


def _mismatch_message(
    ticket: TicketLike,
    by_model_name: Mapping[str, str],
    missing: list[str],
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    params: Mapping[str, nn.Parameter],
    rename: Mapping[str, str],
) -> str:
    parts = []
    if missing:
        after = f" after rename={dict(rename)}" if rename else ""
        more = f" (+{len(missing) - _SHOWN} more)" if len(missing) > _SHOWN else ""
        parts.append(
            f"{len(missing)} of {len(by_model_name)} masked parameters are not in the model{after}: "
            f"{', '.join(missing[:_SHOWN])}{more}"
        )
    if shapes:
        more = f" (+{len(shapes) - _SHOWN} more)" if len(shapes) > _SHOWN else ""
        listed = "; ".join(
            f"{name} is {model} in the model, {mask} in the ticket" for name, mask, model in shapes
        )
        parts.append(f"{len(shapes)} shape mismatches: {listed}{more}")
    hint = ""
    if missing:
        guess = guess_rename(by_model_name[missing[0]], params)
        if guess is not None:
            fix = f"rename={guess}" if guess else "no rename"
            hint = f"; the model has {renamed(by_model_name[missing[0]], guess)}: pass {fix}"
        else:
            hint = f"; the model's parameters are named like {', '.join(list(params)[:3])}"
    elif shapes:
        hint = "; was the ticket cut from another model size?"
    return f"{describe(ticket)} does not fit the model: {'; '.join(parts)}{hint}"


def guess_rename(ticket_name: str, params: Mapping[str, nn.Parameter]) -> dict[str, str] | None:
    """The prefix swap that maps `ticket_name` onto the model name sharing its longest dotted tail.

    ``uniter.encoder.layer.0.attention.self.query.weight`` against a model holding
    ``bert.encoder.layer.0.attention.self.query.weight`` gives ``{"uniter.": "bert."}``; ``{}`` when the
    model holds `ticket_name` itself (no rename needed). None when no model name shares at least the
    last two name parts (``query.weight``).
    """
    parts = ticket_name.split(".")
    best_shared, best_name = 0, ""
    for model_name in params:
        other = model_name.split(".")
        shared = 0
        while shared < min(len(parts), len(other)) and parts[-1 - shared] == other[-1 - shared]:
            shared += 1
        if shared > best_shared:
            best_shared, best_name = shared, model_name
    if best_shared < 2:
        return None
    tail_length = len(".".join(parts[-best_shared:]))
    ticket_prefix = ticket_name[: len(ticket_name) - tail_length]
    model_prefix = best_name[: len(best_name) - tail_length]
    return {} if ticket_prefix == model_prefix else {ticket_prefix: model_prefix}
