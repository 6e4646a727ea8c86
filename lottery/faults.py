"""Named fault points, so tests can kill a job at an exact moment (mid-round, mid-ticket-write).

`LOTTERY_FAULT=name@n` makes the n-th time this process reaches `fault_point("name")` end it with
SIGKILL, as a preempted or OOM-killed job would end: no cleanup, no atexit, no flush. Unset (the normal
case) a fault point costs one dictionary lookup. `LOTTERY_RAISE=name` makes `raise_point("name")` raise
instead: every decision rank 0 takes alone (`dist.on_main`) is such a point, named as in its errors.
`LOTTERY_NAN_LOSS=step[@rank]` makes that step's loss NaN (`poisoned_loss`).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FAULT_ENV = "LOTTERY_FAULT"
_hits: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    name, _, count = spec.partition("@")
    try:
        return name, int(count or 1)
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected name@count, e.g. imp.round_02.step@1") from None


def fault_point(name: str) -> None:
    """SIGKILL this process if `$LOTTERY_FAULT` names this point and this is the hit it names."""
    target = _target()
    if target is None or target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)


RAISE_ENV = "LOTTERY_RAISE"


class InjectedFault(RuntimeError):
    """The failure `$LOTTERY_RAISE` asks for (tests of what the other ranks do when one fails)."""


def raise_point(name: str) -> None:
    """Raise InjectedFault here if `$LOTTERY_RAISE` names this point (every hit)."""
    if os.environ.get(RAISE_ENV) == name:
        raise InjectedFault(f"injected fault at {name} ({RAISE_ENV})")


NAN_ENV = "LOTTERY_NAN_LOSS"


def poisoned_loss(loss: torch.Tensor, step: int) -> torch.Tensor:
    """`loss` made NaN if `$LOTTERY_NAN_LOSS` names this step (``step`` or ``step@rank``): the tests'
    stand-in for a diverged run, reached through the same forward and backward as a real one."""
    spec = os.environ.get(NAN_ENV, "")
    if not spec:
        return loss
    at, _, rank = spec.partition("@")
    if int(at) != step or (rank and int(rank) != int(os.environ.get("RANK", "0"))):
        return loss
    return loss * float("nan")
