"""Masks hold on every ZeRO stage x precision: 2 ranks, AdamW with weight decay, clipping, accumulation 2.

Each layout runs tests/workers/enforce_matrix.py once for every precision this CPU runs (fp32 and bf16;
fp16 where oneDNN has it), which take the optimizer wrappers a GPU run takes: the torch optimizer or
FP16_UnfusedOptimizer at stage 0, DeepSpeedZeroOptimizer at 1-2, DeepSpeedZeroOptimizer_Stage3 at 3.
After 8 steps every pruned entry must be exactly 0.0 in the gathered module weight, the fp32 master
and both Adam moments, read back through DeepSpeed's accessors rather than the enforcer's.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import run, torchrun

pytestmark = pytest.mark.distributed

EXPECTED_WRAPPERS = {
    ("zero0", "fp32"): "AdamW",
    ("zero0", "bf16"): "FP16_UnfusedOptimizer",
    ("zero1", "bf16"): "DeepSpeedZeroOptimizer",
    ("zero2", "bf16"): "DeepSpeedZeroOptimizer",
    ("zero3", "bf16"): "DeepSpeedZeroOptimizer_Stage3",
    ("zero3_offload", "bf16"): "DeepSpeedZeroOptimizer_Stage3",
}


def _precisions() -> list[str]:
    import torch

    precisions = ["fp32", "bf16"]
    if torch.ops.mkldnn._is_mkldnn_fp16_supported():
        precisions.append("fp16")
    return precisions


def _run(tmp_path, layout: str, precisions: list[str], broken: bool = False) -> dict:
    out = tmp_path / f"{layout}.json"
    env = {"LOTTERY_TEST_BREAK_ENFORCER": "1"} if broken else {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        run(torchrun(2) + ["tests/workers/enforce_matrix.py", layout, str(out), ",".join(precisions)])
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return json.loads(out.read_text())


@pytest.mark.parametrize("layout", ["zero0", "zero1", "zero2", "zero3", "zero3_offload"])
def test_pruned_entries_stay_zero_in_weight_master_and_moments(tmp_path, layout, deepspeed_ops):
    result = _run(tmp_path, layout, _precisions())
    assert result["world"] == 2
    for precision, case in result["cases"].items():
        assert case["precision"] == precision
        if (layout, precision) in EXPECTED_WRAPPERS:
            assert case["wrapper"] == EXPECTED_WRAPPERS[(layout, precision)]
        assert case["revived"] == {"weight": 0, "master": 0, "exp_avg": 0, "exp_avg_sq": 0}, (precision, case)
        assert case["kept_changed_fraction"] > 0.95, (precision, case)  # it trained
        assert case["loss_finite"]


def test_an_enforcer_that_leaves_gradients_unmasked_revives_every_copy(tmp_path, deepspeed_ops):
    """The control: with the test switch the same run revives pruned entries in all four copies."""
    case = _run(tmp_path, "zero0", ["bf16"], broken=True)["cases"]["bf16"]
    assert all(count > 1000 for count in case["revived"].values()), case
