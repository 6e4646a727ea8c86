"""Each benchmark's own metric, computed the way its leaderboard does, on plain Python / torch inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def vqa_score(predictions: Sequence[str], answers: Sequence[Mapping[str, float]]) -> float:
    """Mean soft score of the predicted answers: min(1, #annotators who gave it / 3), 0 if nobody did."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions")
    if not predictions:
        raise ValueError("no predictions to score")
    return sum(scores.get(p, 0.0) for p, scores in zip(predictions, answers, strict=True)) / len(predictions)


def accuracy(predictions: Sequence[object], gold: Sequence[object]) -> float:
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions for {len(gold)} labels")
    if not gold:
        raise ValueError("no predictions to score")
    return sum(p == g for p, g in zip(predictions, gold, strict=True)) / len(gold)


def vcr_accuracies(
    answer_pred: Sequence[int],
    answer_gold: Sequence[int],
    rationale_pred: Sequence[int],
    rationale_gold: Sequence[int],
) -> dict[str, float]:
    """Q->A, QA->R (rationale given the right answer) and Q->AR (both right), as VCR reports them."""
    both = [
        a == ag and r == rg
        for a, ag, r, rg in zip(answer_pred, answer_gold, rationale_pred, rationale_gold, strict=True)
    ]
    return {
        "q->a": accuracy(answer_pred, answer_gold),
        "qa->r": accuracy(rationale_pred, rationale_gold),
        "q->ar": sum(both) / len(both),
    }


def retrieval_recalls(
    scores: torch.Tensor, caption_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """R@k both ways and their mean from a (captions x images) score matrix.

    `caption_image[c]` is the image caption c describes. Text->image: the right image is among the k
    best images for the caption. Image->text: one of the image's captions is among its k best captions.
    """
    captions, images = scores.shape
    if len(caption_image) != captions:
        raise ValueError(f"{len(caption_image)} caption labels for a score matrix of {captions} captions")
    truth = torch.as_tensor(caption_image)
    # rank of the right image for each caption: how many images score strictly higher
    right = scores[torch.arange(captions), truth]
    text_rank = (scores > right[:, None]).sum(dim=1)
    image_rank = torch.full((images,), captions, dtype=torch.long)
    for image in range(images):
        own = truth == image
        if own.any():
            column = scores[:, image]
            best_own = column[own].max()
            image_rank[image] = (column > best_own).sum()
    result = {}
    for k in ks:
        result[f"txt2img_r{k}"] = float((text_rank < k).float().mean())
        result[f"img2txt_r{k}"] = float((image_rank < k).float().mean())
    result["mean_recall"] = sum(result.values()) / len(result)
    return result
