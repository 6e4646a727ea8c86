"""Train under a ticket: read it once (rank 0, verified, broadcast), install it, keep it, prove it.

The training loops call `attach_ticket` after building the engine, `enforcer.before_step()` between
backward and step, `check_every` after each step and `verify_now` before anything is written from the
weights (a checkpoint, a pruned mask, a model); with no ticket configured they do nothing.
"""

from __future__ import annotations

import logging

from lottery import dist
from lottery.config import SparsityConfig
from lottery.sparsity.enforce import MaskEnforcer, verify_pruned
from lottery.tickets.distributed import load_broadcast
from lottery.tickets.store import default_root

log = logging.getLogger("lottery.train.ticketed")


def attach_ticket(engine, sparsity: SparsityConfig) -> MaskEnforcer | None:
    """Install the configured ticket on `engine` (collective); None when the run is dense.

    The model's fingerprint is checked under the run's scope, or under the ticket's own when the run
    names none, so a ticket cut from another model (or another scope than the run asks) is refused.
    """
    if not sparsity.ticket:
        return None
    model = engine.module
    store = sparsity.store or default_root()
    scope = tuple(sparsity.scope) or None
    ticket = load_broadcast(
        store,
        sparsity.ticket,
        expect_fingerprint=model.fingerprint,
        expect_scope=scope,
        model_name=model.config.name,
    )
    enforcer = MaskEnforcer(engine, ticket.masks)
    verify_pruned(engine, ticket.masks, when="right after installing the ticket")
    if dist.is_main():
        broken = " [TEST SWITCH: gradients left unmasked]" if enforcer.broken else ""
        log.info(
            f"training under ticket {ticket.id[:12]} ({ticket.meta.method}, {ticket.sparsity:.2%} sparse) "
            f"from {store}{broken}"
        )
    return enforcer


def check_every(enforcer: MaskEnforcer | None, sparsity: SparsityConfig, step: int) -> None:
    """Every `verify_every` steps, raise if any pruned entry is not 0.0 (collective)."""
    if enforcer is not None and sparsity.verify_every and step % sparsity.verify_every == 0:
        verify_pruned(enforcer.engine, enforcer.masks, when=f"at step {step}")


def verify_now(enforcer: MaskEnforcer | None, when: str) -> None:
    """Raise if any pruned entry is not 0.0 (collective): call before writing anything from the weights."""
    if enforcer is not None:
        verify_pruned(enforcer.engine, enforcer.masks, when=when)
