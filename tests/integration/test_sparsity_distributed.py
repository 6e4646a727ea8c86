"""Sparsity on real DeepSpeed engines, ranks started by torchrun: exact threshold, masks that hold.

Each case runs tests/workers/sparsity_engine.py: a model whose attention matrices have an odd number
of weights (so ZeRO-3 pads the last partition), the exact k-th smallest |w| against `torch.kthvalue` on
the gathered weights, a 60% global magnitude mask against the same mask computed on the gathered
weights, then 50 AdamW steps (lr 1e-2, weight decay 0.1, clipping 0.5) with a further prune to 70%
at step 25, checking every pruned weight after every step.
"""

from __future__ import annotations

import json

import pytest
from conftest import run, torchrun

pytestmark = pytest.mark.distributed


def _run_worker(tmp_path, layout: str, nproc: int, *extra: str) -> dict:
    out = tmp_path / f"{layout}-{nproc}.json"
    run(torchrun(nproc) + ["tests/workers/sparsity_engine.py", layout, str(out), *extra])
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    ("layout", "nproc"),
    [("zero3", 1), ("zero0", 2), ("zero1", 2), ("zero2", 2), ("zero3", 2), ("zero3_offload", 2)],
)
def test_threshold_is_exact_and_pruned_weights_stay_exactly_zero(tmp_path, layout, nproc, deepspeed_ops):
    result = _run_worker(tmp_path, layout, nproc)
    assert result["world"] == nproc
    if layout.startswith("zero3") and nproc == 2:
        assert result["padded"], "the model must have a parameter whose ZeRO-3 partition is padded"
    for case in result["threshold_cases"]:
        assert case["ours"] == case["kthvalue"], case
        assert case["selected"] == case["k"], case
    assert result["sparsity_60"] == pytest.approx(0.6, abs=1e-4)
    assert result["mask_matches_reference"]
    assert result["nonzero_after_install"] == 0
    assert result["nonzero_per_step"] == [0] * 50
    assert result["sparsity_mid"] == pytest.approx(0.7, abs=1e-4)
    assert result["gathered_pruned_nonzero"] == 0
    assert result["kept_changed_fraction"] > 0.99


@pytest.mark.parametrize("layout", ["zero2", "zero3"])
def test_without_gradient_masking_the_optimizer_revives_pruned_weights(tmp_path, layout, deepspeed_ops):
    """The control for the test above: zeroing weights once is not enough."""
    result = _run_worker(tmp_path, layout, 2, "unenforced")
    assert result["nonzero_after_install"] == 0
    assert max(result["nonzero_per_step"]) > 1000
    assert result["gathered_pruned_nonzero"] > 1000
