"""A prediction that keeps its ties, so a metric can score a tie as random tie-breaking would.

`torch.argmax` returns the first of several equal maxima, so a model whose outputs are constant
"answers" index 0 everywhere and its score follows the label order, not what it learned. A `Tied`
prediction holds every label the argmax could have returned; the metrics (`metrics.py`) average the
example's score over them, the expected score of breaking the tie uniformly at random. Predictions are
gathered across ranks as pickled objects, so this is a plain frozen dataclass of a tuple.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class Tied:
    """The labels of the indices an argmax ties on (one per index, in index order; never empty)."""

    labels: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("a tied prediction needs at least one label")


def tie_set(prediction: Any) -> tuple[Any, ...]:
    """The labels a prediction may be: a `Tied`'s labels, or the one label of a plain prediction."""
    return prediction.labels if isinstance(prediction, Tied) else (prediction,)


def tied_argmax(scores: Tensor, labels: Sequence[Any] | None = None) -> list[Tied]:
    """Per row of a (rows, C) score matrix, every index exactly equal to the row's maximum.

    Indices become `labels[i]` when labels are given. A NaN scores below everything (a NaN row ties
    on every index): comparisons with NaN are all false, so it would otherwise tie with nothing and
    win or vanish depending on where it sits.
    """
    if scores.dim() != 2:
        raise ValueError(f"tied_argmax takes a (rows, C) score matrix, got shape {tuple(scores.shape)}")
    rows = scores.detach().float()
    rows = rows.masked_fill(rows.isnan(), float("-inf")).cpu()
    best = rows == rows.max(dim=-1, keepdim=True).values
    tied = [row.nonzero().flatten().tolist() for row in best]
    return [Tied(tuple(labels[i] for i in t) if labels is not None else tuple(t)) for t in tied]


def expected_correct(logits: Tensor, targets: Tensor) -> float:
    """Sum over rows of P(argmax == target) under random tie-breaking: 1/|ties| where the target ties
    for the maximum, else 0. The tensor form of the rule above, for accuracies summed in a loop
    (pre-training's MLM and ITM, the grounding criteria); NaN scores below everything."""
    rows = logits.detach().float()
    rows = rows.masked_fill(rows.isnan(), float("-inf"))
    best = rows == rows.max(dim=-1, keepdim=True).values
    hit = best.gather(-1, targets.reshape(-1, 1)).squeeze(-1)
    return float((hit.float() / best.sum(dim=-1).float()).sum())
