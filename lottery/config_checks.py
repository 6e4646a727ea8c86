"""What a config value may be, written next to its field: ``steps: PositiveInt = 300``.

A field's type may carry checks (``Annotated[int, Range(ge=1)]``); the loader (config_loader.py) runs
them on every value it reads from YAML or an override, so a nonsense value is refused at the boundary
with one line naming the key, the value and what is allowed (``train.zero_stage: 7 is not one of 0, 1,
2, 3``). The annotations change no value and no default, so they leave every config digest as it was.
Checks that relate two fields (``min_objects <= max_objects``) stay in ``__post_init__`` or the job's
``check_config``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from lottery.config_loader import ConfigError, parse_override


@dataclass(frozen=True)
class OneOf:
    """The value must be one of `choices`."""

    choices: tuple[Any, ...]

    def check(self, value: Any, key: str) -> None:
        if value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ConfigError(f"{key}: {value!r} is not one of {allowed}")


def one_of(*choices: Any) -> OneOf:
    return OneOf(tuple(choices))


@dataclass(frozen=True)
class Range:
    """The value must be >= `ge` (or > `gt`) and <= `le` (or < `lt`); None: no bound on that side."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: Any, key: str) -> None:
        low = (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
        high = (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)
        if not (low and high):
            raise ConfigError(f"{key}: {value!r} must be {self.describe()}")

    def describe(self) -> str:
        left = "[" if self.ge is not None else "(" if self.gt is not None else ""
        right = "]" if self.le is not None else ")" if self.lt is not None else ""
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            return f"within {left}{_number(low)}, {_number(high)}{right}"
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {_number(low)}"
        return f"{'<=' if self.le is not None else '<'} {_number(high)}"


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


@dataclass(frozen=True)
class Pattern:
    """The value is a regular expression (a prunable scope, a parameter-name pattern)."""

    def check(self, value: str, key: str) -> None:
        try:
            re.compile(value)
        except re.error as err:
            raise ConfigError(f"{key}: {value!r} is not a regular expression ({err})") from None


@dataclass(frozen=True)
class KeyValue:
    """The value is an override for a config read later (``train.steps=50``): its form is checked now,
    its key when that config is read."""

    def check(self, value: str, key: str) -> None:
        try:
            parse_override(value)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]  # counts, seeds, intervals where 0 means "never" or "all"
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Probability = Annotated[float, Range(ge=0, le=1)]
Sparsity = Annotated[float, Range(gt=0, lt=1)]  # a fraction of the prunable weights, neither none nor all
Regexes = tuple[Annotated[str, Pattern()], ...]
Overrides = tuple[Annotated[str, KeyValue()], ...]
