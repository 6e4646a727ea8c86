"""Publishing a run's ticket: the round closest to a sparsity goes into a store under an alias.

The ticket keeps its bytes (and so its id) from the run's own store: a user can check that the
published ``uniter-mini/pretrain/s60`` is exactly round N of run R.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lottery.tickets import TicketError, TicketStore, default_root


def closest_round(run_dir: Path, sparsity: float) -> tuple[str, float]:
    """(alias, its sparsity) of the run's round whose mask is closest to `sparsity` (the earlier on a tie)."""
    masks = TicketStore(Path(run_dir) / "masks")
    aliases = sorted(a for a in masks.aliases() if a.startswith("round_"))
    if not aliases:
        raise TicketError(f"{run_dir}: no round masks in {masks.root} (has the run finished a round?)")
    scored = [(abs(masks.load(a).sparsity - sparsity), a) for a in aliases]
    _, alias = min(scored)
    return alias, masks.load(alias).sparsity


def publish(run_dir: Path, sparsity: float, alias: str, store_root: str | Path | None = None) -> str:
    """Put the closest round's ticket into the store (default: `$LOTTERY_TICKET_STORE` or tickets/); its id."""
    run_dir = Path(run_dir)
    source_alias, found = closest_round(run_dir, sparsity)
    ticket = TicketStore(run_dir / "masks").load(source_alias)
    store = TicketStore(store_root or default_root())
    ticket_id = store.put(ticket.masks, ticket.meta, alias=alias)
    if ticket_id != ticket.id:
        raise TicketError(f"{run_dir}: re-stored {source_alias} got id {ticket_id}, not {ticket.id}")
    print(
        f"published {alias} -> {ticket_id[:12]} ({found:.2%} sparse, {source_alias} of {run_dir}) in {store.root}"
    )
    return ticket_id


def publish_all(
    run_dir: Path, targets: Mapping[float, str], store_root: str | Path | None = None
) -> dict[str, str]:
    """`publish` of each sparsity -> alias of `targets` (``imp.publish``), in sparsity order; alias -> id."""
    return {
        alias: publish(run_dir, sparsity, alias, store_root) for sparsity, alias in sorted(targets.items())
    }
