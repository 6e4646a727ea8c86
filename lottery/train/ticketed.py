"""Train under a ticket: read it once (rank 0, verified, broadcast), install it, keep it, prove it.

The training loops call `attach_ticket` after building the engine, `enforcer.before_step()` between
backward and step, and `check_every` after each step; with no ticket configured they do nothing.
"""

from __future__ import annotations

from lottery import dist
from lottery.config import SparsityConfig
from lottery.sparsity.enforce import MaskEnforcer, verify_pruned
from lottery.sparsity.scope import DEFAULT_SCOPE
from lottery.tickets.distributed import load_broadcast
from lottery.tickets.store import default_root


def attach_ticket(engine, sparsity: SparsityConfig) -> MaskEnforcer | None:
    """Install the configured ticket on `engine` (collective); None when the run is dense."""
    if not sparsity.ticket:
        return None
    model = engine.module
    store = sparsity.store or default_root()
    ticket = load_broadcast(
        store,
        sparsity.ticket,
        expect_fingerprint=model.fingerprint(DEFAULT_SCOPE),
        expect_scope=DEFAULT_SCOPE,
        model_name=model.config.name,
    )
    enforcer = MaskEnforcer(engine, ticket.masks)
    verify_pruned(engine, ticket.masks)
    if dist.is_main():
        print(
            f"training under ticket {ticket.id[:12]} ({ticket.meta.method}, {ticket.sparsity:.2%} sparse) "
            f"from {store}",
            flush=True,
        )
    return enforcer


def check_every(enforcer: MaskEnforcer | None, sparsity: SparsityConfig, step: int) -> None:
    """Every `verify_every` steps, raise if any pruned weight is not 0.0 (collective)."""
    if enforcer is not None and sparsity.verify_every and step % sparsity.verify_every == 0:
        verify_pruned(enforcer.engine, enforcer.masks)
