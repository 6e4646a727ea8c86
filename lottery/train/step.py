"""The training step every loop shares: pre-training, both IMP objectives and fine-tuning.

One optimiser step is `train.grad_accum` micro-batches. For each: cast and move it (`to_device`),
forward, backward, keep the ticket (`MaskEnforcer.before_step`) and call the engine's step, which
DeepSpeed turns into a real optimiser step (clipping, the precision's master copy, the lr schedule)
at the accumulation boundary only. Adding something to "the step" (a tracker, a stop request at a
step boundary) is done here once.

Also here: when a loop logs, validates and checkpoints (`due`; ``*_every = 0`` means never, except at
the end), the seed of a micro-step's random draws (`micro_seed`), `RunHooks`, through which a caller
(IMP) drives a run without owning its loop, and `StopRequest`: SIGUSR1 or SIGTERM (what SLURM sends
before a preemption or the time limit, ``--signal=USR1@300``, and at ``scancel``) is honoured at the
next step boundary, by every rank at the same step, and the job ends with `Preempted` (exit 5) once
its checkpoint is written, so a rerun or a requeued job continues exactly where it stopped.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType

import torch

from lottery import dist
from lottery.config import ConfigError, TrainConfig
from lottery.faults import poisoned_loss
from lottery.sparsity.enforce import MaskEnforcer
from lottery.train.batches import to_device
from lottery.train.divergence import first_non_finite, stop_if_not_finite

EVERY_KEYS = ("log_every", "val_every", "ckpt_every")
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(RuntimeError):
    """The job stopped at a step boundary on a signal, after writing what a rerun continues from."""

    def __init__(self, step: int, signal_name: str, resumable: bool = True) -> None:
        then = (
            "its checkpoint is written; rerun the same command (or let SLURM requeue the job) to continue"
            if resumable
            else "it keeps no checkpoint: a rerun starts it again from its first step"
        )
        super().__init__(f"stopped after step {step} on {signal_name}: {then}")
        self.step = step


_received: list[int] = []  # the stop signals this process has received, in order (process-wide)


def _note(signum: int, frame: FrameType | None) -> None:
    """The first stop signal is noted for the next step boundary; a second one is obeyed at once (the
    default action), so a job stuck outside the loop still stops on a repeated `kill` or `scancel`."""
    if _received:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received.append(signum)


def _catch_stop_signals() -> dict[int, object]:
    """Install `_note` for every stop signal not already caught; the handlers it replaced."""
    return {
        signum: signal.signal(signum, _note)
        for signum in STOP_SIGNALS
        if signal.getsignal(signum) is not _note
    }


def install_stop_handlers() -> bool:
    """Catch SIGUSR1 / SIGTERM from now on (the CLI calls it before a training job sets up, so a signal
    that comes during setup is honoured at the first step instead of killing the process). False
    outside the main thread, where Python cannot install handlers."""
    if threading.current_thread() is not threading.main_thread():
        return False
    _catch_stop_signals()
    return True


class StopRequest:
    """`with StopRequest() as stop:` catches SIGUSR1 / SIGTERM for the block (if not caught already);
    `stop.agreed()` at a step boundary (collective) tells every rank whether any rank was signalled,
    so all stop at the same step.

    A signal only records itself: the step in flight finishes (a rank never stops inside a
    collective). Handlers this block installed are removed at its end (a library caller's own stay).
    """

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = _catch_stop_signals()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def agreed(self, step: int = 0, named_losses: Sequence[tuple[str, float]] = ()) -> str | None:
        """The name of the signal that stops the run, or None to go on; every rank must call it.

        With the step's `named_losses` (`optimizer_step`'s result) the same all-gather also carries
        whether this rank's loss was finite, and a non-finite loss on any rank raises NonFiniteLoss on
        every rank (`divergence.stop_if_not_finite`): one collective per step for both.
        """
        diverged = first_non_finite(named_losses) is not None
        local = torch.tensor([_received[0] if _received else 0, int(diverged)], dtype=torch.long)
        table = dist.all_gather_tensor(local)  # (world, 2); one rank: no collective
        stop_if_not_finite(step, named_losses, flags=table[:, 1])
        highest = int(table[:, 0].max())
        return signal.Signals(highest).name if highest else None


@dataclass
class RunHooks:
    """How a caller (IMP) drives a run without owning its loop.

    ``end_step``: the run is complete at this step instead of ``train.steps`` (an early-stopped round).
    ``on_step(engine, step)``: called on every rank after each step, before its checkpoint; returning
    True ends the run at that step (the caller must pass ``end_step`` = that step on a rerun).
    ``on_done(engine)``: called on every rank once the run is complete, with the engine holding the
    final weights, also when a rerun finds the run already complete (it is restored from the checkpoint).
    ``on_start(engine)``: called on every rank before the first step of a run that starts at step 0.
    ``save_model``: write the final model directory (IMP rounds need only the engine).
    ``mark_done``: write the run's ``DONE`` (`lottery.run_record`) at its end; a caller that records
    more in the directory afterwards (theta0's criteria) or keeps its own progress (IMP) marks it itself.
    """

    end_step: int | None = None
    on_start: Callable[[object], None] | None = None
    on_step: Callable[[object, int], bool] | None = None
    on_done: Callable[[object], None] | None = None
    save_model: bool = True
    mark_done: bool = True


def micro_seed(seed: int, rank: int, micro_step: int) -> int:
    """The seed of every random draw of one micro-step (task, masks, negatives, dropout) on one rank."""
    return (seed * 1_000_003 + rank) * 10_000_019 + micro_step


def check_schedule(train: TrainConfig) -> None:
    """Refuse a negative interval before any step (0 is allowed: never, except at the end)."""
    for key in EVERY_KEYS:
        if getattr(train, key) < 0:
            raise ConfigError(
                f"train.{key}={getattr(train, key)}: must be >= 0 (0: only at the end of the run)"
            )


def due(step: int, every: int, last: int) -> bool:
    """Whether `step` logs / validates / checkpoints: every `every` steps (0: never), and always at `last`."""
    return step == last or (every > 0 and step % every == 0)


def optimizer_step(
    engine,
    enforcer: MaskEnforcer | None,
    micro_batches: Iterable[tuple[dict, object]],
    dtype: torch.dtype,
    *,
    step: int,
) -> list[tuple[str, float]]:
    """One optimiser step over `micro_batches` ((collated batch, objective) pairs, `grad_accum` of them,
    drawn lazily so that each is collated right before its forward); (objective name, loss) of each.

    The engine is configured with ``gradient_accumulation_steps = train.grad_accum``, so it steps the
    optimiser after the last one; the enforcer runs before every engine step, which is where a
    boundary step can write the parameters. The caller hands the result to `StopRequest.agreed`
    before anything of the step is saved or verified: a loss that is not finite on any rank stops the
    run there, on every rank.
    """
    named: list[tuple[str, float]] = []
    for batch, objective in micro_batches:
        loss, _ = engine(to_device(batch, engine.device, dtype), objective)
        loss = poisoned_loss(loss, step)
        engine.backward(loss)
        if enforcer is not None:
            enforcer.before_step()
        engine.step()
        named.append((str(getattr(objective, "name", objective)), float(loss.detach())))
    return named
