"""``lottery imp``: iterative magnitude pruning on a DeepSpeed engine, with its baselines, resumable.

Round r trains ``train.steps`` steps under mask r (round 0 dense) from the rewind point (theta0, or
the weights at ``imp.rewind_step`` of round 0). At its end, with method
- ``imp``: the survivors with the smallest magnitude go, globally, down to ``schedule[r]`` of the
  original weights: mask r + 1;
- ``oneshot``: round 0's weights are cut straight to every target: masks 1..R at once;
- ``random``: random masks at every target (seeded), drawn at the end of round 0 for the same layout.
Rounds 1..R of the baselines train their mask only to measure it, as IMP's rounds do. Pruning runs
on the partitioned engine (each rank scores its own slice; nothing is gathered but the mask bits).

Every step is resumable (see state.py for the layout): a rerun of the same command skips finished
rounds, resumes the round in flight from its checkpoint (from its start when the world size changed),
and recomputes a mask whose ticket was not written yet, so the masks are bit-identical to those of a
run that was never stopped.

The rewind point of ``imp.rewind_step`` k is saved at step k of round 0, so round 0 never ends before
step k: an early bird that settles earlier is logged and round 0 trains on to the first draw at or
after step k (the choice keeps the rewind step the config names, rather than rewinding to an earlier
step than asked). A later round starts only from a rewind point that round 0 saved (rewind.py),
and round 0 redone on another world size drops the old one: its step-k weights will differ.

What rank 0 alone reads, decides or writes goes through ``dist.on_main``, so a failure there stops
every rank at once instead of leaving the others in the next collective. The sites (the `what` of
each, and the name ``LOTTERY_RAISE`` takes to inject a failure there):

- ``imp.config``: the run directory and its config.yaml;
- ``imp.aliases``: what the aliases ``imp.publish`` names held when the job began;
- ``imp.state``: reading state.json, whose content every rank then acts on;
- ``imp.cleanup``: removing the checkpoints a finished round left behind;
- ``imp.world_size``: recording the round in flight, and restarting it on a new world size;
- ``imp.rewind``: checking a later round's rewind point before its engine is built;
- ``imp.rewind_save``: writing the rewind point (rewind.py);
- ``imp.early_stop``: recording an early-bird stop in state.json;
- ``imp.prune``: putting the new masks in the run's store, and the round's round.json;
- ``imp.finish``: marking the round done and removing its checkpoints;
- ``imp.report``: the per-round table (rounds.json);
- ``imp.publish``: publishing the tickets ``imp.publish`` asks for;
- ``imp.done``: the run's ``DONE`` (`lottery.run_record`), once every round, the table and the tickets are in.
"""

from __future__ import annotations

import gc
import logging
import shutil
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from lottery import dist
from lottery.config import (
    FinetuneConfig,
    ImpConfig,
    PretrainConfig,
    SparsityConfig,
    digest,
    load_config,
)
from lottery.faults import fault_point
from lottery.files import write_json_atomic
from lottery.imp.checks import check_config, check_family, downstream_config
from lottery.imp.early_bird import EarlyBird, prune_engine
from lottery.imp.rewind import check_rewind, remove_rewind_point, require_rewind_point, save_rewind_point
from lottery.imp.state import ImpState, round_alias, run_dir_for, run_identity
from lottery.models.families import FAMILIES, Family
from lottery.run_record import mark_done, write_record
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import parameter_shape, prunable_parameters
from lottery.tickets import TicketMeta, TicketStore
from lottery.tickets.distributed import load_broadcast
from lottery.tickets.layout import model_name
from lottery.train.finetune import finetune
from lottery.train.pretrain import pretrain
from lottery.train.step import RunHooks
from lottery.train.theta0 import ensure_theta0, identity

log = logging.getLogger("lottery.imp")


@dataclass
class ImpRun:
    """One IMP run: its config, theta0, directory and state. `run()` is collective."""

    config: ImpConfig
    theta0_config: PretrainConfig
    theta0_model: Path
    theta0_digest: str
    directory: Path
    _masks_of_round: tuple[int, MaskSet] | None = field(default=None, repr=False)

    @property
    def rounds(self) -> int:
        """Trained rounds: the dense round 0, then one per target sparsity."""
        return len(self.config.imp.schedule) + 1

    @property
    def family(self) -> Family:
        """The model family every round trains: theta0's ``model.family``."""
        return FAMILIES[self.theta0_config.model.family]

    @property
    def scope(self) -> tuple[str, ...]:
        """The prunable scope of every mask of the run (``imp.scope``, or the family's default scope)."""
        return tuple(self.config.imp.scope) or self.family.scope()

    @property
    def masks(self) -> TicketStore:
        return TicketStore(self.directory / "masks")

    def round_dir(self, index: int) -> Path:
        return self.directory / "rounds" / round_alias(index)

    def start_model(self, index: int) -> Path:
        if self.config.imp.rewind_step and index > 0:
            return self.directory / "rewind"
        return self.theta0_model

    def tasks(self) -> tuple[str, ...]:
        if self.config.imp.objective != "pretrain":
            return (self.config.imp.objective,)
        return tuple(sorted(name for name, weight in self.config.tasks.mix.items() if weight > 0))

    def meta(self, index: int) -> TicketMeta:
        return TicketMeta(
            family=self.family.name,
            model=self.model_name,
            method=self.config.imp.method,
            tasks=self.tasks(),
            imp_round=index,
            config_digest=self.directory.name,
        )

    @property
    def model_name(self) -> str:
        return model_name(self.theta0_model)

    def round_config(self, index: int) -> PretrainConfig:
        ticket = round_alias(index) if index > 0 else ""
        return PretrainConfig(
            run_dir=str(self.round_dir(index)),
            data=replace(self.theta0_config.data, curriculum=()),
            model=replace(self.theta0_config.model, dir=str(self.start_model(index))),
            tasks=self.config.tasks,
            optim=self.config.optim,
            train=self.config.train,
            sparsity=SparsityConfig(ticket=ticket, store=str(self.directory / "masks"), scope=self.scope),
        )

    def task_round_config(self, index: int) -> FinetuneConfig:
        """A downstream round: the task's fine-tune from theta0 under the round's mask, the run's steps."""
        return replace(
            downstream_config(self.config),
            ticket=round_alias(index) if index > 0 else "dense",
            store=str(self.directory / "masks"),
            scope=self.scope,
            save_model=False,
            train=replace(self.config.train, val_every=0, ckpt_every=0),
        )

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        dist.on_main(self._write_config, what="imp.config")
        for index in range(self.rounds):
            state = self._state()
            if index < state.rounds_done:
                # a job killed right after finishing a round may have left its checkpoints
                leftover = partial(shutil.rmtree, self.round_dir(index) / "checkpoints", ignore_errors=True)
                dist.on_main(leftover, what="imp.cleanup")
                continue
            if index > 0 and self.config.imp.rewind_step:
                dist.on_main(
                    lambda: require_rewind_point(self.directory, self.config.imp.rewind_step),
                    what="imp.rewind",
                )
            self._check_world_size(state, index)
            stop = self._state().early_stops.get(str(index))
            if dist.is_main():
                log.info(f"IMP round {index} of {self.rounds - 1}: {self._round_label(index)}")
            if self.config.imp.objective == "pretrain":
                pretrain(self.round_config(index), keep_process_group=True, hooks=self._hooks(index, stop))
            else:
                finetune(
                    self.task_round_config(index),
                    keep_process_group=True,
                    run_dir=self.round_dir(index),
                    hooks=self._hooks(index, stop),
                )
            self._finish_round(index)
            gc.collect()

    def _write_config(self) -> None:
        """The resolved config beside the run (rank 0), whole: a reader never sees half of it."""
        write_record(self.directory, self.config, note=f"theta0: {self.theta0_digest}")

    def _state(self) -> ImpState:
        """The state as rank 0 reads it, on every rank (collective): all ranks take the same decisions."""
        return dist.on_main(lambda: ImpState.load(self.directory, self.theta0_digest), what="imp.state")

    def _round_label(self, index: int) -> str:
        sparsity = 0.0 if index == 0 else self.config.imp.schedule[index - 1]
        return f"training at {sparsity:.0%} sparsity ({self.config.imp.method}, run {self.directory})"

    def _check_world_size(self, state: ImpState, index: int) -> None:
        """Restart the round in flight from its start when it was begun on another number of ranks."""
        dist.on_main(lambda: self._begin_round(state, index), what="imp.world_size")

    def _begin_round(self, state: ImpState, index: int) -> None:
        """Rank 0's part of _check_world_size: restart the round if need be, and record it in flight."""
        world = dist.world_size()
        if state.in_flight == index and state.in_flight_world_size not in (None, world):
            log.info(
                f"IMP round {index} was begun on {state.in_flight_world_size} rank(s), this job has "
                f"{world}: its checkpoint is specific to the world size, so round {index} restarts "
                "from its start (finished rounds keep their masks)"
            )
            shutil.rmtree(self.round_dir(index), ignore_errors=True)
            state.early_stops.pop(str(index), None)
            if index == 0:  # the rewind point is a step of this round 0, on the old world size
                remove_rewind_point(self.directory)
        state.in_flight, state.in_flight_world_size = index, world
        state.save(self.directory)

    def _current_masks(self, engine, index: int) -> MaskSet:
        """The mask round `index` trains under (collective the first time; kept for the round's hooks)."""
        if self._masks_of_round is None or self._masks_of_round[0] != index:
            if index == 0:
                params = prunable_parameters(engine.module, self.scope)
                masks = MaskSet.dense({n: parameter_shape(p) for n, p in params.items()}, self.scope)
            else:
                masks = load_broadcast(
                    self.masks.root, round_alias(index), expect_fingerprint=None, expect_scope=self.scope
                ).masks
            self._masks_of_round = (index, masks)
        return self._masks_of_round[1]

    def _early_bird(self, engine, index: int) -> EarlyBird | None:
        imp = self.config.imp
        if imp.method != "imp" or index >= self.rounds - 1 or not imp.early_bird_every:
            return None
        return EarlyBird(
            self.round_dir(index),
            self._current_masks(engine, index),
            imp.schedule[index],
            imp.early_bird_every,
            imp.early_bird_threshold,
            self.meta(index + 1),
        )

    def _hooks(self, index: int, stop: int | None) -> RunHooks:
        imp = self.config.imp
        tracker: dict[str, EarlyBird | None] = {}

        def on_step(engine, step: int) -> bool:
            fault_point(f"imp.round_{index:02d}.step")
            if index == 0 and step == imp.rewind_step:
                self._save_rewind_point(engine)
            if "bird" not in tracker:
                tracker["bird"] = self._early_bird(engine, index)
            bird = tracker["bird"]
            if bird is None or not bird.on_step(engine, step):
                return False
            if index == 0 and step < imp.rewind_step:
                if dist.is_main():
                    log.info(
                        f"IMP round 0: early-bird mask settled at step {step}, the round goes on to "
                        f"the rewind step {imp.rewind_step}"
                    )
                return False
            dist.on_main(lambda: self._record_early_stop(index, step), what="imp.early_stop")
            return True

        def on_done(engine) -> None:
            self._prune_after(engine, index, tracker.get("bird") or self._early_bird(engine, index))

        def on_start(engine) -> None:
            self._check_rewind(engine, index)

        callbacks = {"on_start": on_start, "on_step": on_step, "on_done": on_done}
        return RunHooks(end_step=stop, **callbacks, save_model=False, mark_done=False)

    def _record_early_stop(self, index: int, step: int) -> None:
        state = ImpState.load(self.directory, self.theta0_digest)
        state.early_stops[str(index)] = step
        state.save(self.directory)
        log.info(f"IMP round {index}: early-bird mask settled at step {step} of {self.config.train.steps}")

    def _check_rewind(self, engine, index: int) -> None:
        check_rewind(engine, self._current_masks(engine, index), self.start_model(index), index)

    def _save_rewind_point(self, engine) -> None:
        save_rewind_point(engine, self.theta0_model, self.directory, self.config.imp.rewind_step)

    def _prune_after(self, engine, index: int, bird: EarlyBird | None) -> None:
        """Cut the masks this round's end gives, store them, and record the round (collective)."""
        imp = self.config.imp
        current = self._current_masks(engine, index)
        made: dict[int, MaskSet] = {}
        if imp.method == "imp" and index < self.rounds - 1:
            made[index + 1] = prune_engine(engine, current, "magnitude", imp.schedule[index])
        elif imp.method in ("oneshot", "random") and index == 0:
            method = "magnitude" if imp.method == "oneshot" else "random"
            for offset, target in enumerate(imp.schedule, start=1):
                made[offset] = prune_engine(engine, current, method, target, seed=imp.seed)
        fault_point("imp.prune")  # every rank: the masks are cut, none is stored yet
        dist.on_main(lambda: self._store_masks(index, current, made, bird), what="imp.prune")

    def _store_masks(
        self, index: int, current: MaskSet, made: dict[int, MaskSet], bird: EarlyBird | None
    ) -> None:
        """Rank 0's part of _prune_after: the new tickets, then round.json (which marks them all put)."""
        for target_round, masks in made.items():
            ticket = self.masks.put(masks, self.meta(target_round), alias=round_alias(target_round))
            log.info(f"  mask {round_alias(target_round)}: {masks.sparsity:.2%} sparse, ticket {ticket[:12]}")
        record: dict[str, object] = {"round": index, "sparsity": current.sparsity}
        if index + 1 in made:
            record["hamming_to_next"] = made[index + 1].hamming(current) / current.total
        if bird is not None and index + 1 in made:
            record["early_bird"] = bird.distances_to(made[index + 1])
        write_json_atomic(self.round_dir(index) / "round.json", record)

    def _finish_round(self, index: int) -> None:
        dist.on_main(lambda: self._mark_done(index), what="imp.finish")

    def _mark_done(self, index: int) -> None:
        state = ImpState.load(self.directory, self.theta0_digest)
        state.rounds_done, state.in_flight, state.in_flight_world_size = index + 1, None, None
        state.save(self.directory)
        # the round's masks and metrics are final: its optimizer state is dead weight on disk
        shutil.rmtree(self.round_dir(index) / "checkpoints", ignore_errors=True)


def prepare(config: ImpConfig) -> ImpRun:
    """Check the config, build or reuse theta0 (collective), and find the run directory."""
    check_config(config)
    theta0_config = load_config(config.theta0, list(config.theta0_overrides))
    check_family(config, theta0_config)
    theta0_model = ensure_theta0(theta0_config)
    if theta0_model is None:
        raise RuntimeError("theta0 stopped before its last step (theta0_overrides has stop_after_steps?)")
    theta0_digest = digest(identity(theta0_config))
    return ImpRun(config, theta0_config, theta0_model, theta0_digest, run_dir_for(config, theta0_digest))


def imp(config: ImpConfig) -> Path:
    """Run (or continue) an IMP run to its end, publish what the config asks; returns the run directory."""
    from lottery.imp.report import report
    from lottery.run_lock import holding
    from lottery.tickets.publish import aliases_now, publish_all

    dist.init()
    run = prepare(config)
    settings, steps = config.imp, config.train.steps
    with holding(run.directory):
        # what the aliases held before this job's rounds: a job publishing one meanwhile keeps it
        seen = dist.on_main(lambda: aliases_now(settings.publish, settings.store or None), what="imp.aliases")
        run.run()
        dist.on_main(
            lambda: report(run.directory, run.theta0_model.parent, settings.objective, steps),
            what="imp.report",
        )
        dist.on_main(
            lambda: publish_all(run.directory, settings.publish, settings.store or None, seen),
            what="imp.publish",
        )
        identity = run_identity(config, run.theta0_digest)
        dist.on_main(lambda: mark_done(run.directory, identity), what="imp.done")
    dist.shutdown()
    return run.directory
