"""Stop a run whose loss is no longer a number, on every rank at the same step, before it saves anything.

A NaN or infinite loss poisons the gradients DeepSpeed all-reduces, so every rank's weights are lost
from that step on; going on would checkpoint them, and an IMP round would cut a ticket from them
(magnitudes of NaN sort anywhere). The check runs after each optimiser step, before the step's
checkpoint and the caller's hooks, so the last checkpoint and every ticket already stored are from
finite weights.

One rank may diverge alone (its micro-batch overflowed), so the ranks first agree whether any did,
then learn from the rank that did which task and value it saw: every rank raises the same error, and
none waits in a collective for a peer that has stopped. The agreement rides on the per-step
all-gather the training loops make anyway for stop signals (`StopRequest.agreed`), so a healthy step
costs no collective of its own; `stop_if_not_finite` gathers the flags itself for other callers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lottery import dist


class NonFiniteLoss(RuntimeError):
    """The loss of a step was NaN or infinite on some rank: the run stops without saving that step."""


def first_non_finite(named_losses: Sequence[tuple[str, float]]) -> tuple[str, float] | None:
    """The first (objective name, loss) of this rank's micro-batches that is not finite, if any."""
    return next(((name, loss) for name, loss in named_losses if not math.isfinite(loss)), None)


def stop_if_not_finite(
    step: int, named_losses: Sequence[tuple[str, float]], flags: torch.Tensor | None = None
) -> None:
    """Raise NonFiniteLoss on every rank when any rank's loss at `step` was not finite (collective).

    `flags`: every rank's 0/1 "my loss was not finite" (rank order), when the caller has gathered it
    already with other per-step state; otherwise they are all-gathered here.
    """
    local = first_non_finite(named_losses)
    if flags is None:
        flags = dist.all_gather_tensor(torch.tensor([0 if local is None else 1], dtype=torch.long))
    if int(flags.sum()) == 0:
        return
    bad = [int(r) for r in torch.nonzero(flags.view(-1)).view(-1)]
    found = dist.broadcast_object(local, src=bad[0])
    name, value = found
    ranks = ", ".join(str(r) for r in bad)
    raise NonFiniteLoss(
        f"step {step}: the {name} loss is {value} on rank(s) {ranks}; the run stops before saving this "
        "step, so its checkpoints and tickets hold finite weights (a rerun of the same command resumes "
        "and, its draws being seeded, meets the same step: a new run with a lower optim.lr, more "
        "optim.warmup_steps, or bf16 rather than fp16 is the way on)"
    )
