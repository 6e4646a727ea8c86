"""Where mask slices are made: on the device and in the dtype of the tensor they multiply.

Under ZeRO-3 with parameter and optimizer offload the fp32 master and moments sit on the CPU while
the working weight and DeepSpeed's gradient accessors return GPU tensors; a mask made once on one
device would be multiplied with tensors on another. No GPU here, so the `meta` device stands in for
"a device other than the mask's": the logic that picks the device is the same.
"""

from __future__ import annotations

import torch

from lottery.sparsity.enforce import MaskEnforcer
from lottery.sparsity.slots import Slot, mask_slice


def _enforcer_with(flat: dict[str, torch.Tensor]) -> MaskEnforcer:
    """An enforcer's mask cache without an engine (only the device logic is under test)."""
    enforcer = object.__new__(MaskEnforcer)
    enforcer._flat = flat
    enforcer._device_masks = {}
    return enforcer


def test_a_slot_mask_is_made_on_the_slots_device_in_its_dtype_over_its_range():
    flat = torch.tensor([True, False, True, True, False, False])
    on_cpu = mask_slice(flat, Slot("master", torch.zeros(3), 2, False))
    assert on_cpu.tolist() == [1.0, 1.0, 0.0] and on_cpu.dtype == torch.float32
    elsewhere = mask_slice(
        flat, Slot("weight", torch.empty(4, dtype=torch.bfloat16, device="meta"), 1, False)
    )
    assert elsewhere.device.type == "meta" and elsewhere.dtype == torch.bfloat16 and elsewhere.numel() == 4


def test_the_gradient_mask_follows_the_gradient_and_is_converted_once_per_device():
    enforcer = _enforcer_with({"w": torch.tensor([True, False, True, False])})
    grad_cpu = torch.ones(2, 2)
    grad_gpu = torch.empty(2, 2, dtype=torch.bfloat16, device="meta")
    cpu = enforcer.mask_like("w", grad_cpu)
    gpu = enforcer.mask_like("w", grad_gpu)
    assert cpu.device.type == "cpu" and cpu.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert gpu.device.type == "meta" and gpu.dtype == torch.bfloat16 and gpu.shape == (2, 2)
    assert enforcer.mask_like("w", grad_cpu) is cpu  # cached: no conversion in the per-step path
    assert len(enforcer._device_masks) == 2
