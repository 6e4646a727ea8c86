"""Word-region alignment: IPOT plans have the right marginals, find the alignment, and give gradients."""

from __future__ import annotations

import torch

from lottery.tasks.packing import pack, unpack_outputs
from lottery.tasks.wra import cosine_cost, ipot_plan, ot_distance, wra_loss


def _masks(words: int, regions: int, valid_words: int, valid_regions: int):
    word_mask = torch.arange(words).unsqueeze(0) < valid_words
    region_mask = torch.arange(regions).unsqueeze(0) < valid_regions
    return word_mask, region_mask


def test_plan_has_uniform_marginals_on_valid_positions_and_zero_on_padding():
    cost = torch.rand(1, 6, 5, generator=torch.Generator().manual_seed(0))
    word_mask, region_mask = _masks(6, 5, 4, 3)
    plan = ipot_plan(cost, word_mask, region_mask, iterations=200)
    assert torch.allclose(plan[0, :4].sum(1), torch.full((4,), 1 / 4), atol=1e-4)
    assert torch.allclose(plan[0, :, :3].sum(0), torch.full((3,), 1 / 3), atol=1e-4)
    assert plan[0, 4:].abs().sum() == 0 and plan[0, :, 3:].abs().sum() == 0


def test_plan_concentrates_on_the_matching_region_of_each_word():
    gen = torch.Generator().manual_seed(1)
    regions = torch.randn(1, 4, 16, generator=gen)
    order = torch.tensor([2, 0, 3, 1])
    words = regions[:, order] + 0.05 * torch.randn(1, 4, 16, generator=gen)
    word_mask, region_mask = _masks(4, 4, 4, 4)
    plan = ipot_plan(cosine_cost(words, regions), word_mask, region_mask, beta=0.1, iterations=100)
    assert torch.equal(plan[0].argmax(1), order)
    assert (plan[0].gather(1, order.unsqueeze(1)).squeeze(1) > 0.9 / 4).all()


def test_aligned_pairs_cost_less_than_shuffled_ones_and_the_loss_has_gradients():
    gen = torch.Generator().manual_seed(2)
    regions = torch.randn(2, 5, 8, generator=gen)
    words = torch.stack([regions[0, [1, 0, 4]], torch.randn(3, 8, generator=gen)]).requires_grad_()
    word_mask, region_mask = _masks(3, 5, 3, 5)
    word_mask, region_mask = word_mask.expand(2, -1), region_mask.expand(2, -1)
    distance = ot_distance(words, regions, word_mask, region_mask)
    assert distance[0] < distance[1]
    loss = wra_loss(distance, torch.tensor([1, 0]))
    loss.backward()
    assert torch.isfinite(loss) and words.grad.abs().sum() > 0


def test_unpack_outputs_reads_each_samples_words_and_regions_from_the_packed_sequence():
    ids = [torch.tensor([1, 5, 2]), torch.tensor([1, 6, 7, 8, 2])]
    feats = [torch.zeros(4, 3), torch.zeros(2, 3)]
    batch = pack(ids, feats, [torch.zeros(4, 7), torch.zeros(2, 7)])
    # a fake output whose value at each packed slot is its position
    sequence = torch.arange(batch["attn_masks"].size(1)).float().repeat(2, 1).unsqueeze(2)
    words, regions, word_mask, region_mask = unpack_outputs(
        sequence, torch.tensor([3, 5]), torch.tensor([4, 2])
    )
    assert word_mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert region_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert regions[0, :, 0].tolist() == [3, 4, 5, 6]
    assert regions[1, :2, 0].tolist() == [5, 6]
