"""Word-region alignment (WRA): UNITER's optimal-transport distance between words and regions.

For each image-text pair, the cost of moving the words' contextual outputs onto the regions' is
computed by IPOT (the inexact proximal point method for optimal transport, Xie et al. 2019) over the
cosine distance, with uniform mass on each side. Matched pairs should be cheap to align and
mismatched ones expensive, so the loss is mean(cost of matched) - mean(cost of mismatched), added to
ITM with a weight (UNITER: 0.1). The plan is computed without gradients, as in UNITER; the gradient
flows through the cost matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor

IPOT_ITERATIONS = 50
IPOT_BETA = 0.5


def cosine_cost(words: Tensor, regions: Tensor) -> Tensor:
    """(B, T, R) cost 1 - cos(word, region), in fp32."""
    words = torch.nn.functional.normalize(words.float(), dim=-1, eps=1e-5)
    regions = torch.nn.functional.normalize(regions.float(), dim=-1, eps=1e-5)
    return 1.0 - words @ regions.transpose(1, 2)


@torch.no_grad()
def ipot_plan(
    cost: Tensor,
    word_mask: Tensor,
    region_mask: Tensor,
    beta: float = IPOT_BETA,
    iterations: int = IPOT_ITERATIONS,
) -> Tensor:
    """(B, T, R) transport plan between uniform masses on the valid words and regions.

    `word_mask` (B, T) and `region_mask` (B, R) are True on real (not padding) positions; padding rows
    and columns of the plan are 0.
    """
    valid = word_mask.unsqueeze(2) & region_mask.unsqueeze(1)
    n_words = word_mask.sum(1, keepdim=True).clamp(min=1).float()  # (B, 1)
    n_regions = region_mask.sum(1, keepdim=True).clamp(min=1).float()
    kernel = torch.exp(-cost / beta).masked_fill(~valid, 0.0)
    plan = valid.float()
    sigma = region_mask.float() / n_regions  # (B, R)
    for _ in range(iterations):
        q = kernel * plan
        delta = 1.0 / (n_words * (q @ sigma.unsqueeze(2)).squeeze(2) + 1e-12)  # (B, T)
        delta = delta * word_mask.float()
        sigma = 1.0 / (n_regions * (q.transpose(1, 2) @ delta.unsqueeze(2)).squeeze(2) + 1e-12)
        sigma = sigma * region_mask.float()
        plan = delta.unsqueeze(2) * q * sigma.unsqueeze(1)
    return plan.masked_fill(~valid, 0.0)


def ot_distance(words: Tensor, regions: Tensor, word_mask: Tensor, region_mask: Tensor) -> Tensor:
    """(B,) transport cost <plan, cost> of each pair: low when words and regions align."""
    cost = cosine_cost(words, regions)
    plan = ipot_plan(cost.detach(), word_mask, region_mask)
    return (plan * cost).sum(dim=(1, 2))


def wra_loss(distance: Tensor, matched: Tensor) -> Tensor:
    """mean OT distance of matched pairs - mean of mismatched ones (0 for a side that is absent)."""
    matched = matched.bool()
    positive = distance[matched].mean() if matched.any() else distance.new_zeros(())
    negative = distance[~matched].mean() if (~matched).any() else distance.new_zeros(())
    return positive - negative
