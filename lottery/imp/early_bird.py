"""Early-bird detection: how far the mask a round would end with still moves while it trains.

Every ``every`` steps the tracker draws the mask that pruning at this moment would give (the same
global-magnitude cut the round ends with, computed on the partitioned engine, nothing gathered) and
logs its Hamming distance to the previous draw, as a fraction of the prunable weights (You et al.,
"Drawing early-bird tickets", 2020). Once the distance is below ``threshold`` the round may end early.

Draws are kept in the round's own ticket store, so a round resumed after a kill compares its next draw
with the one taken before the kill and decides exactly as the uninterrupted round would.

Rank 0 alone reads and writes the draws' store, through ``dist.on_main`` so that a failure there stops
every rank at once. Its sites (``LOTTERY_RAISE=<name>`` fails one in tests): ``early_bird.alias``
(is the previous draw stored?) and ``early_bird.record`` (store this draw, append its distance to
early_bird.jsonl). `distances_to` is rank 0's alone and takes no collective: IMP calls it inside its
own rank-0 site.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lottery import dist
from lottery.sparsity.criteria import prune_pieces
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.partition import engine_pieces, gather_masks
from lottery.tickets import TicketMeta, TicketStore
from lottery.tickets.distributed import load_broadcast


def prune_engine(engine, masks: MaskSet, method: str, sparsity: float, seed: int = 0) -> MaskSet:
    """`masks` pruned further to `sparsity` from the engine's fp32 weights; collective, every rank gets it."""
    pieces = engine_pieces(engine, masks)
    kept = prune_pieces(pieces, method, sparsity, seed=seed)
    return gather_masks(pieces, kept, masks)


@dataclass
class EarlyBird:
    """Draws, logs and judges the round's mask every `every` steps; `meta` labels the stored draws."""

    directory: Path
    base: MaskSet
    target: float
    every: int
    threshold: float
    meta: TicketMeta

    @property
    def store(self) -> TicketStore:
        return TicketStore(self.directory / "draws")

    @staticmethod
    def alias(step: int) -> str:
        return f"step_{step:06d}"

    def on_step(self, engine, step: int) -> bool:
        """Collective. True when this step's draw moved less than the threshold since the previous one."""
        if not self.every or step % self.every:
            return False
        draw = prune_engine(engine, self.base, "magnitude", self.target)
        previous = self._draw(step - self.every)
        distance = None if previous is None else draw.hamming(previous) / draw.total
        # a collective: no rank goes on before rank 0 has stored the draw, or fails without it
        dist.on_main(lambda: self._record(draw, step, distance), what="early_bird.record")
        return bool(self.threshold) and distance is not None and distance < self.threshold

    def _record(self, draw: MaskSet, step: int, distance: float | None) -> None:
        """Rank 0: keep this step's draw and log its distance (a rerun's line replaces an earlier one)."""
        self.store.put(draw, self.meta, alias=self.alias(step))
        with open(self.directory / "early_bird.jsonl", "a") as log:
            log.write(json.dumps({"step": step, "distance_to_previous": distance}) + "\n")

    def _draw(self, step: int) -> MaskSet | None:
        """The draw stored at `step`, on every rank, or None when there is none (collective)."""
        if step <= 0:
            return None
        stored = dist.on_main(lambda: self.alias(step) in self.store.aliases(), what="early_bird.alias")
        if not stored:  # rank 0 decides, so no rank waits for a draw alone
            return None
        return load_broadcast(
            self.store.root, self.alias(step), expect_fingerprint=self.base.fingerprint, expect_scope=None
        ).masks

    def distances_to(self, final: MaskSet) -> list[dict[str, float]]:
        """Each stored draw's distance to the round's final mask, and to its previous draw (rank 0 only)."""
        rows = []
        log = self.directory / "early_bird.jsonl"
        logged = {}
        if log.is_file():
            for line in log.read_text().splitlines():
                record = json.loads(line)
                logged[record["step"]] = record[
                    "distance_to_previous"
                ]  # a rerun's line replaces an earlier one
        for alias in sorted(self.store.aliases()):
            step = int(alias.removeprefix("step_"))
            draw = self.store.load(alias).masks
            rows.append(
                {
                    "step": step,
                    "distance_to_previous": logged.get(step),
                    "distance_to_final": draw.hamming(final) / final.total,
                }
            )
        return rows
