"""Publishing a run's ticket: the round closest to a sparsity goes into a store under an alias.

The ticket keeps its bytes (and so its id) from the run's own store: a user can check that the
published ``uniter-mini/pretrain/s60`` is exactly round N of run R.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from lottery.tickets import TicketError, TicketStore, default_root
from lottery.tickets.alias_lock import ANY, AliasTaken

log = logging.getLogger("lottery.tickets.publish")


def closest_round(run_dir: Path, sparsity: float) -> tuple[str, float]:
    """(alias, its sparsity) of the run's round whose mask is closest to `sparsity` (the earlier on a tie)."""
    masks = TicketStore(Path(run_dir) / "masks")
    aliases = sorted(a for a in masks.aliases() if a.startswith("round_"))
    if not aliases:
        raise TicketError(f"{run_dir}: no round masks in {masks.root} (has the run finished a round?)")
    scored = [(abs(masks.load(a).sparsity - sparsity), a) for a in aliases]
    _, alias = min(scored)
    return alias, masks.load(alias).sparsity


def publish(
    run_dir: Path, sparsity: float, alias: str, store_root: str | Path | None = None, *, expect: object = ANY
) -> str:
    """Put the closest round's ticket into the store (default: `$LOTTERY_TICKET_STORE` or tickets/); its id.

    `expect`: what the alias held when the job began (`TicketStore.alias`); a job that published the
    alias since wins, and `AliasTaken` says so.
    """
    run_dir = Path(run_dir)
    source_alias, found = closest_round(run_dir, sparsity)
    ticket = TicketStore(run_dir / "masks").load(source_alias)
    store = TicketStore(store_root or default_root())
    ticket_id = store.put(ticket.masks, ticket.meta)
    store.alias(alias, ticket_id, expect=expect)
    if ticket_id != ticket.id:
        raise TicketError(f"{run_dir}: re-stored {source_alias} got id {ticket_id}, not {ticket.id}")
    log.info(
        f"published {alias} -> {ticket_id[:12]} ({found:.2%} sparse, {source_alias} of {run_dir}) in {store.root}"
    )
    return ticket_id


def aliases_now(targets: Mapping[float, str], store_root: str | Path | None = None) -> dict[str, str | None]:
    """alias -> the id it holds now (None: absent), for each alias of `targets`: a job's `seen` at its start."""
    store = TicketStore(store_root or default_root())
    return {alias: store.current(alias) for alias in targets.values()}


def publish_all(
    run_dir: Path,
    targets: Mapping[float, str],
    store_root: str | Path | None = None,
    seen: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """`publish` of each sparsity -> alias of `targets` (``imp.publish``), in sparsity order; alias -> id.

    `seen` (`aliases_now` at the job's start): an alias another job published since is left to it,
    with one line naming the winner, and maps to the winner's id.
    """
    published = {}
    for sparsity, alias in sorted(targets.items()):
        try:
            published[alias] = publish(
                run_dir, sparsity, alias, store_root, expect=(seen or {}).get(alias, ANY)
            )
        except AliasTaken as taken:
            log.info(f"publish: {taken}")
            published[alias] = taken.winner
    return published
