"""Each benchmark's own metric, computed the way its leaderboard does, on plain Python / torch inputs.

Ties are scored as their expected value under uniform random tie-breaking, so a constant model gets
chance level instead of a perfect retrieval score (every tie counted a hit) or an argmax score set by
the label order. A prediction is a label or a `Tied` set of labels (`ties.py`); the example scores the
mean over its tied labels. Sums are exact fractions, so a constant model scores exactly 1/C or k/N,
not that figure plus float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from math import comb
from typing import Any

import torch

from lottery.evaluation.ties import tie_set


def _average(values: Iterable[Fraction]) -> Fraction:
    values = list(values)
    if not values:
        raise ValueError("no predictions to score")
    return sum(values, Fraction(0)) / len(values)


def _mean(values: Iterable[Fraction]) -> float:
    return float(_average(values))


def _check_lengths(predictions: Sequence[Any], gold: Sequence[Any], what: str) -> None:
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions for {len(gold)} {what}")


def hit_rate(prediction: Any, gold: Any) -> Fraction:
    """P(the prediction is `gold`) under random tie-breaking: 1 / #tied labels if gold is among them."""
    labels = tie_set(prediction)
    return Fraction(sum(label == gold for label in labels), len(labels))


def _soft_score(prediction: Any, scores: Mapping[str, float]) -> Fraction:
    labels = tie_set(prediction)
    return sum((Fraction(scores.get(label, 0.0)) for label in labels), Fraction(0)) / len(labels)


def vqa_score(predictions: Sequence[Any], answers: Sequence[Mapping[str, float]]) -> float:
    """Mean soft score of the predicted answers: min(1, #annotators who gave it / 3), 0 if nobody did.

    A tied prediction scores the mean soft score of its tied answers.
    """
    _check_lengths(predictions, answers, "questions")
    return _mean(_soft_score(p, scores) for p, scores in zip(predictions, answers, strict=True))


def accuracy(predictions: Sequence[Any], gold: Sequence[Any]) -> float:
    """Mean `hit_rate`: an untied prediction scores 1 or 0, one tied over n labels 1/n if gold is among them."""
    _check_lengths(predictions, gold, "labels")
    return _mean(hit_rate(p, g) for p, g in zip(predictions, gold, strict=True))


def vcr_accuracies(
    answer_pred: Sequence[Any],
    answer_gold: Sequence[int],
    rationale_pred: Sequence[Any],
    rationale_gold: Sequence[int],
) -> dict[str, float]:
    """Q->A, QA->R (rationale given the right answer) and Q->AR (both right), as VCR reports them.

    The two choices' ties are broken independently, so an example's Q->AR is P(answer right) x
    P(rationale right).
    """
    _check_lengths(answer_pred, answer_gold, "answer labels")
    _check_lengths(rationale_pred, rationale_gold, "rationale labels")
    answer = [hit_rate(p, g) for p, g in zip(answer_pred, answer_gold, strict=True)]
    rationale = [hit_rate(p, g) for p, g in zip(rationale_pred, rationale_gold, strict=True)]
    return {
        "q->a": _mean(answer),
        "qa->r": _mean(rationale),
        "q->ar": _mean(a * r for a, r in zip(answer, rationale, strict=True)),
    }


def top_k_chance(higher: int, others_tied: int, own_tied: int, k: int) -> Fraction:
    """P(at least one of `own_tied` right items ranks in the top k), ties broken uniformly at random.

    `higher` items score strictly above the right items' best score and `others_tied` wrong items
    score exactly that. The tie group (own_tied + others_tied items) fills the places from `higher`
    on in random order; every right item misses iff the group's first k - higher places all go to
    wrong items. With one right item this is clamp((k - higher) / (others_tied + 1), 0, 1).
    """
    places = k - higher
    if places <= 0:
        return Fraction(0)
    if places > others_tied:
        return Fraction(1)
    group = others_tied + own_tied
    return 1 - Fraction(comb(group - places, own_tied), comb(group, own_tied))


def retrieval_recalls(
    scores: torch.Tensor, caption_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """R@k both ways and their mean from a (captions x images) score matrix, ties at their expectation.

    `caption_image[c]` is the image caption c describes. Text->image: the right image is among the k
    best images for the caption; the images scoring exactly as the right one are ranked above or below
    it at random (`top_k_chance` with one right item). Image->text: one of the image's captions is
    among its k best captions. Its best own caption sets the bar: captions of other images scoring
    above it push it down, those scoring exactly as much are tied with it, and its other own captions
    scoring exactly as much are tied too but help (any own caption in the top k is a hit), so the
    chance is that of any of them coming first (`top_k_chance` with several right items). An image
    without a caption is a miss. A NaN scores below everything, as in `tied_argmax`. A constant matrix
    gives R@k = k / #images text->image, and 1 - C(N - k, m) / C(N, m) image->text for an image with
    m of the N captions: exactly a uniformly random ranking's recall.
    """
    captions, images = scores.shape
    if len(caption_image) != captions:
        raise ValueError(f"{len(caption_image)} caption labels for a score matrix of {captions} captions")
    scores = scores.detach().float().cpu()
    scores = scores.masked_fill(scores.isnan(), float("-inf"))
    truth = torch.as_tensor(caption_image)
    right = scores[torch.arange(captions), truth][:, None]
    text_higher = (scores > right).sum(dim=1).tolist()
    text_tied = ((scores == right).sum(dim=1) - 1).tolist()  # other images scoring as the right one
    image_ranks: list[tuple[int, int, int] | None] = []  # (higher, others tied, own tied) per image
    for image in range(images):
        own = truth == image
        if not own.any():
            image_ranks.append(None)
            continue
        column = scores[:, image]
        best = column[own].max()
        image_ranks.append(
            (
                int((column > best).sum()),
                int(((column == best) & ~own).sum()),
                int((column[own] == best).sum()),
            )
        )
    result: dict[str, Fraction] = {}
    for k in ks:
        text = [top_k_chance(h, t, 1, k) for h, t in zip(text_higher, text_tied, strict=True)]
        found = [Fraction(0) if r is None else top_k_chance(*r, k) for r in image_ranks]
        result[f"txt2img_r{k}"] = _average(text)
        result[f"img2txt_r{k}"] = _average(found)
    result["mean_recall"] = _average(result.values())
    return {key: float(value) for key, value in result.items()}
