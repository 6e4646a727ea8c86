"""Scope, MaskSet, the exact threshold and the pruning criteria, in one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as torch_prune
from tiny import TINY

from lottery.models.uniter import UniterConfig, UniterForPretraining
from lottery.sparsity import threshold
from lottery.sparsity.criteria import cut
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import DEFAULT_SCOPE, ScopeError, model_fingerprint, prunable_names
from lottery.sparsity.threshold import LazyScores, kth_smallest, select_smallest


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(6, 8, generator=gen), "b.weight": torch.randn(5, 4, generator=gen)}


def test_default_scope_is_encoder_linear_weights_and_pooler_only():
    names = [n for n, _ in UniterForPretraining(TINY).named_parameters()]
    chosen = prunable_names(names)
    assert len(chosen) == 2 * 6 + 1
    assert all(n.endswith(".weight") and ("encoder.layer" in n or "pooler" in n) for n in chosen)
    assert not any("LayerNorm" in n or "embeddings" in n for n in chosen)


def test_scope_that_matches_nothing_or_is_not_a_regex_is_refused():
    with pytest.raises(ScopeError, match="matches no parameter"):
        prunable_names(["x.weight"], [r"encoder\..*"])
    with pytest.raises(ScopeError, match="bad regex"):
        prunable_names(["x.weight"], ["(unclosed"])


def test_fingerprint_changes_with_shape_and_scope():
    small = UniterForPretraining(TINY)
    wider = UniterForPretraining(UniterConfig(**{**TINY.__dict__, "intermediate_size": 96}))
    assert model_fingerprint(small) != model_fingerprint(wider)
    assert model_fingerprint(small) != model_fingerprint(small, [r".*pooler\.dense\.weight"])
    assert model_fingerprint(small) == model_fingerprint(UniterForPretraining(TINY))


@pytest.mark.parametrize("k", [1, 7, 50, 99, 100])
def test_kth_smallest_equals_torch_kthvalue_exactly(k):
    values = torch.rand(100, generator=torch.Generator().manual_seed(3)) * 1e-3
    pieces = [values[:13], values[13:13], values[13:]]  # an empty piece, as a rank with no entries has
    assert kth_smallest(pieces, k) == float(torch.kthvalue(values, k).values)


def test_selection_takes_exactly_k_with_ties_broken_by_position():
    values = torch.tensor([0.5, 0.1, 0.1, 0.1, 0.9, 0.1])
    (chosen,) = select_smallest([values], 3)
    assert chosen.tolist() == [False, True, True, True, False, False]
    assert int(select_smallest([values[:2], values[2:]], 2)[1].sum()) == 1


@pytest.mark.parametrize("chunk", [3, 64, 1 << 20])
def test_chunked_scans_of_lazy_scores_select_what_whole_tensors_do(monkeypatch, chunk):
    # values quantised to 1/16 make ties at the threshold; +inf marks already-pruned entries
    values = torch.randint(0, 16, (500,), generator=torch.Generator().manual_seed(5)).float() / 16
    values[::37] = float("inf")
    pieces = [values[:123], values[123:123], values[123:]]
    lazy = [LazyScores(p.numel(), lambda a, b, p=p: p[a:b].clone()) for p in pieces]
    monkeypatch.setattr(threshold, "CHUNK", chunk)
    for k in (1, 77, 250, 486):
        assert kth_smallest(lazy, k) == kth_smallest(pieces, k) == float(torch.kthvalue(values, k).values)
        chosen = torch.cat(select_smallest(lazy, k))
        assert int(chosen.sum()) == k
        assert torch.equal(chosen, torch.cat(select_smallest(pieces, k)))
        kth = float(torch.kthvalue(values, k).values)
        expected = values < kth
        ties = torch.nonzero(values == kth).reshape(-1)
        expected[ties[: k - int(expected.sum())]] = True  # ties in position order
        assert torch.equal(chosen, expected)


def test_negative_zero_is_a_zero_score_not_an_error():
    assert kth_smallest([torch.tensor([-0.0, 1.0, 2.0])], 2) == 1.0


def test_threshold_refuses_negative_nan_and_out_of_range_k():
    with pytest.raises(ValueError, match="non-negative"):
        kth_smallest([torch.tensor([-1.0, 2.0])], 1)
    with pytest.raises(ValueError, match="outside"):
        kth_smallest([torch.tensor([1.0, 2.0])], 3)


def test_global_magnitude_equals_torch_prune_global_unstructured():
    weights = _weights()
    ours = cut(weights, "magnitude", 0.6, scope=[".*"])
    modules = {n: torch.nn.Linear(w.shape[1], w.shape[0], bias=False) for n, w in weights.items()}
    for name, module in modules.items():
        module.weight.data.copy_(weights[name])
    torch_prune.global_unstructured(
        [(m, "weight") for m in modules.values()],
        pruning_method=torch_prune.L1Unstructured,
        amount=round(0.6 * ours.total),
    )
    for name, module in modules.items():
        assert torch.equal(ours.masks[name], module.weight_mask.bool()), name


def test_pruning_is_relative_to_survivors_of_the_original():
    weights = _weights()
    first = cut(weights, "magnitude", 0.3, scope=[".*"])
    second = cut(weights, "magnitude", 0.4, scope=[".*"], base=first)
    assert first.total - first.kept == round(0.3 * first.total)
    assert second.total - second.kept == round(0.4 * second.total)
    assert all(bool((s <= f).all()) for s, f in zip(second.masks.values(), first.masks.values(), strict=True))
    with pytest.raises(ValueError, match="already pruned"):
        cut(weights, "magnitude", 0.2, scope=[".*"], base=second)


def test_layerwise_magnitude_prunes_each_layer_to_the_target():
    masks = cut(_weights(), "magnitude-layerwise", 0.5, scope=[".*"])
    assert masks.layer_sparsity() == {"a.weight": 0.5, "b.weight": 0.5}


def test_random_pruning_is_seeded_and_differs_from_magnitude():
    weights = _weights()
    a = cut(weights, "random", 0.5, scope=[".*"], seed=1)
    assert a == cut(weights, "random", 0.5, scope=[".*"], seed=1)
    assert a != cut(weights, "random", 0.5, scope=[".*"], seed=2)
    assert a.hamming(cut(weights, "magnitude", 0.5, scope=[".*"])) > 0
    assert a.total - a.kept == round(0.5 * a.total)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_nm_keeps_exactly_n_of_every_m_along_the_input_dimension(n, m):
    weights = {"a.weight": torch.randn(6, 16)}
    masks = cut(weights, "nm", 0.0, scope=[".*"], n=n, m=m)
    groups = masks.masks["a.weight"].reshape(6, 16 // m, m)
    assert (groups.sum(-1) == n).all()
    kept = weights["a.weight"].abs().reshape(6, -1, m)
    smallest_kept = kept.masked_fill(~groups, float("inf")).min(-1).values
    largest_pruned = kept.masked_fill(groups, -1.0).max(-1).values
    assert (smallest_kept >= largest_pruned).all()


def test_nm_refuses_an_input_dimension_not_divisible_by_m():
    with pytest.raises(ValueError, match="not divisible by m=4"):
        cut({"a.weight": torch.randn(3, 6)}, "nm", 0.0, scope=[".*"])


def test_unknown_method_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="magnitude, magnitude-layerwise, random, nm"):
        cut(_weights(), "l2", 0.5, scope=[".*"])


def test_maskset_pack_round_trip_is_bit_exact_for_sizes_not_multiple_of_8():
    masks = cut({"a.weight": torch.randn(3, 7), "b.weight": torch.randn(1, 5)}, "random", 0.5, scope=[".*"])
    packed = masks.packed()
    assert packed["a.weight"].dtype == np.uint8 and packed["a.weight"].size == 3  # 21 bits
    expected = np.packbits(masks.masks["a.weight"].numpy().reshape(-1), bitorder="big")
    assert np.array_equal(packed["a.weight"], expected)
    again = MaskSet.unpack(packed, dict(masks.shapes()), masks.scope)
    assert again == masks and again.fingerprint == masks.fingerprint


def test_unpack_refuses_a_wrong_byte_count():
    with pytest.raises(ValueError, match="cannot hold 21 bits"):
        MaskSet.unpack({"a.weight": np.zeros(2, np.uint8)}, {"a.weight": (3, 7)})


def test_sparsity_and_hamming():
    masks = MaskSet({"a": torch.tensor([True, False, False, True])}, DEFAULT_SCOPE)
    other = MaskSet({"a": torch.tensor([True, True, False, False])}, DEFAULT_SCOPE)
    assert masks.sparsity == 0.5 and masks.hamming(other) == 2
    with pytest.raises(ValueError, match="different layouts"):
        masks.hamming(MaskSet({"a": torch.ones(5, dtype=torch.bool)}))


def test_model_adapter_exposes_prunable_names_and_fingerprint():
    model = UniterForPretraining(TINY)
    assert model.prunable() == prunable_names([n for n, _ in model.named_parameters()])
    assert model.fingerprint() == model_fingerprint(model)
    assert len(model.fingerprint()) == 64
