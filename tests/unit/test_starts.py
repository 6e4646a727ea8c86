"""theta0'' (`shuffled`): each tensor keeps its multiset of values, and loses where they were."""

from __future__ import annotations

import pytest
import torch

from lottery.train.starts import shuffled, start_state


def state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "uniter.encoder.layer.0.attention.self.query.weight": torch.randn(16, 16, generator=generator),
        "uniter.encoder.layer.0.attention.self.query.bias": torch.randn(16, generator=generator),
        "uniter.embeddings.position_ids": torch.arange(8),
    }


def test_every_tensor_keeps_its_values_in_another_order_and_integers_are_left_alone():
    original = state()
    mixed = shuffled(original, seed=0)
    for name, value in original.items():
        assert mixed[name].shape == value.shape
        assert torch.equal(mixed[name].reshape(-1).sort().values, value.reshape(-1).sort().values), name
    weight = "uniter.encoder.layer.0.attention.self.query.weight"
    assert (mixed[weight] != original[weight]).float().mean() > 0.9  # almost every place gets another value
    assert torch.equal(mixed["uniter.embeddings.position_ids"], original["uniter.embeddings.position_ids"])


def test_the_shuffle_is_a_function_of_the_seed():
    weight = "uniter.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(shuffled(state(), seed=3)[weight], shuffled(state(), seed=3)[weight])
    assert not torch.equal(shuffled(state(), seed=3)[weight], shuffled(state(), seed=4)[weight])


def test_an_unknown_start_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="'theta1'"):
        start_state("theta1", tmp_path, tmp_path)
