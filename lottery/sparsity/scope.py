"""Which parameters a ticket may prune, and a fingerprint that ties a ticket to a model's prunable set.

The default is the BERT-tickets scope: every encoder Q/K/V, attention output and FFN in/out weight,
plus the pooler; embeddings, biases, LayerNorms and task heads stay dense. Patterns are full-match
regexes over parameter names, so a scope is data that a ticket records and a user can override.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from torch import nn

DEFAULT_SCOPE: tuple[str, ...] = (
    r".*encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.weight",
    r".*encoder\.layer\.\d+\.attention\.output\.dense\.weight",
    r".*encoder\.layer\.\d+\.intermediate\.dense\.weight",
    r".*encoder\.layer\.\d+\.output\.dense\.weight",
    r".*pooler\.dense\.weight",
)


class ScopeError(ValueError):
    """A scope that selects nothing, or a pattern that is not a valid regex."""


def compile_scope(scope: Sequence[str]) -> list[re.Pattern[str]]:
    try:
        return [re.compile(pattern) for pattern in scope]
    except re.error as exc:
        raise ScopeError(f"prunable scope: bad regex {exc.pattern!r} ({exc})") from exc


def prunable_names(names: Iterable[str], scope: Sequence[str] = DEFAULT_SCOPE) -> list[str]:
    """The names (in the given order) that fully match any scope pattern; refuses an empty selection."""
    patterns = compile_scope(scope)
    selected = [name for name in names if any(p.fullmatch(name) for p in patterns)]
    if not selected:
        raise ScopeError(f"prunable scope {list(scope)} matches no parameter of the model")
    return selected


def prunable_parameters(model: nn.Module, scope: Sequence[str] = DEFAULT_SCOPE) -> dict[str, nn.Parameter]:
    """name -> parameter for the scope, in the model's registration order (tied weights appear once)."""
    params = dict(model.named_parameters())
    return {name: params[name] for name in prunable_names(params, scope)}


def parameter_shape(param: nn.Parameter) -> tuple[int, ...]:
    """The full shape, also for a ZeRO-3 partitioned parameter (whose own shape is empty)."""
    return tuple(getattr(param, "ds_shape", param.shape))


def fingerprint(shapes: Iterable[tuple[str, Sequence[int]]]) -> str:
    """sha256 (hex) over the ordered (name, shape) pairs of the prunable set."""
    digest = hashlib.sha256()
    for name, shape in shapes:
        digest.update(f"{name}:{'x'.join(str(int(d)) for d in shape)};".encode())
    return digest.hexdigest()


def model_fingerprint(model: nn.Module, scope: Sequence[str] = DEFAULT_SCOPE) -> str:
    return fingerprint((name, parameter_shape(p)) for name, p in prunable_parameters(model, scope).items())


class ScopedPruning:
    """`prunable()` and `fingerprint()` for a model class whose family prunes `PRUNABLE_SCOPE` by default.

    Each family's pre-training and task models set only the class attribute, so the two methods the
    ticket code calls are written once and cannot drift apart between families.
    """

    PRUNABLE_SCOPE: tuple[str, ...] = DEFAULT_SCOPE

    def prunable(self, scope: Sequence[str] | None = None) -> list[str]:
        """The parameter names IMP may prune, in registration order (the ticket's order)."""
        return list(prunable_parameters(self, self.PRUNABLE_SCOPE if scope is None else scope))

    def fingerprint(self, scope: Sequence[str] | None = None) -> str:
        """sha256 over the prunable names and shapes: a ticket cut from another model will not match."""
        return model_fingerprint(self, self.PRUNABLE_SCOPE if scope is None else scope)
