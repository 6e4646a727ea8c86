"""Every copy of a parameter a DeepSpeed engine keeps on this rank: working weight, fp32 master, Adam moments.

A pruned weight stays 0.0 only if every copy the optimizer reads is 0.0 there, and where those copies
live depends on the optimizer wrapper DeepSpeed picked for the (ZeRO stage, precision) pair:

| wrapper (deepspeed 0.19.8)                   | when                          | fp32 master                          |
| -------------------------------------------- | ----------------------------- | ------------------------------------ |
| the torch optimizer itself                   | stage 0, fp32                 | the module weight                    |
| ``FP16_UnfusedOptimizer``                    | stage 0, bf16 or fp16         | a per-parameter fp32 twin, replicated |
| ``DeepSpeedZeroOptimizer`` / ``BF16_Optimizer`` | stages 1-2 (any precision) | a fragment of a flat fp32 partition  |
| ``DeepSpeedZeroOptimizer_Stage3``            | stage 3 (+ offload)           | this rank's flat fp32 partition      |

(Stage 0 under bf16 revived ~98% of a mask in one step when only the first and last rows were known:
the fp32 twin was never zeroed and is copied into the module after every step.)

A `Slot` is a 1-D view of one copy over the entries this rank holds, with its offset in the flattened
parameter, so one mask slice serves every copy. Nothing here is collective and nothing gathers a
parameter; slots are rebuilt on each call because a checkpoint load replaces the optimizer's tensors.
An unknown wrapper is refused: enforcing a mask on copies we do not know of would be a silent lie.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lottery import dist
from lottery.sparsity.partition import is_partitioned, owned_range

MOMENT_KEYS = ("exp_avg", "exp_avg_sq")
WHERES = ("weight", "master", *MOMENT_KEYS)  # every copy a Slot can be


@dataclass(frozen=True)
class Slot:
    """One copy of (part of) a parameter: ``tensor`` holds flattened entries [start, start + numel).

    ``where``: ``weight`` (what forward reads), ``master`` (the fp32 copy the optimizer updates),
    ``exp_avg`` / ``exp_avg_sq`` (Adam's moments). ``replicated``: every rank holds the same entries,
    so a count over ranks takes one rank's.
    """

    where: str
    tensor: Tensor
    start: int
    replicated: bool


def wrapper_name(engine) -> str:
    return type(engine.optimizer).__name__


def parameter_slots(engine, param: nn.Parameter, numel: int) -> list[Slot]:
    """The slots of `param` (full size `numel`) on this rank, for the wrapper `engine` runs."""
    if is_partitioned(param):
        return _stage3_slots(param, numel)
    weight = Slot("weight", param.detach().view(-1), 0, True)
    optimizer = engine.optimizer
    name = wrapper_name(engine)
    if hasattr(param, "_hp_mapping"):  # stages 1-2 and BF16_Optimizer: fp32 fragments of a flat partition
        return [weight, *_fragment_slots(param, _inner(optimizer))]
    if name == "FP16_UnfusedOptimizer":
        return [weight, *_twin_slots(param, optimizer)]
    if isinstance(optimizer, torch.optim.Optimizer):  # stage 0, fp32: the weight is the master
        return [weight, *_moment_slots(optimizer.state.get(param, {}), 0, numel, True)]
    raise NotImplementedError(
        f"optimizer wrapper {name}: its fp32 master and moments are unknown to the mask enforcer; "
        "train with a torch optimizer (lottery.train.engine builds one) or extend lottery/sparsity/slots.py"
    )


def _inner(optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)


def _moment_slots(state: dict, start: int, numel: int, replicated: bool, offset: int = 0) -> list[Slot]:
    """The Adam moments of `state` (none before the optimizer's first step) over [offset, offset + numel)."""
    slots = []
    for key in MOMENT_KEYS:
        value = state.get(key)
        if isinstance(value, Tensor) and value.numel():
            slots.append(Slot(key, value.view(-1).narrow(0, offset, numel), start, replicated))
    return slots


def _fragment_slots(param: nn.Parameter, inner: torch.optim.Optimizer) -> list[Slot]:
    """ZeRO 1-2 / BF16_Optimizer: this rank's fragment of the flat fp32 partition (None: no fragment here)."""
    mapping = param._hp_mapping
    if mapping is None:
        return []
    fragment = mapping.hp_fragment
    start, numel = mapping.lp_fragment_address.start, mapping.lp_fragment_address.numel
    flat = fragment._base if fragment._base is not None else fragment
    offset = mapping.hp_fragment_address.start
    master = Slot("master", fragment.view(-1), start, False)
    return [master, *_moment_slots(inner.state.get(flat, {}), start, numel, False, offset)]


def _twin_slots(param: nn.Parameter, optimizer) -> list[Slot]:
    """Stage 0 in bf16/fp16: the fp32 twin FP16_UnfusedOptimizer keeps for each low-precision weight."""
    for low_group, fp32_group in zip(optimizer.fp16_groups, optimizer.fp32_groups, strict=True):
        for low, twin in zip(low_group, fp32_group, strict=True):
            if low is param:
                state = optimizer.optimizer.state.get(twin, {})
                return [
                    Slot("master", twin.detach().view(-1), 0, True),
                    *_moment_slots(state, 0, twin.numel(), True),
                ]
    return []  # a frozen parameter: the optimizer keeps no copy of it


def _stage3_slots(param: nn.Parameter, numel: int) -> list[Slot]:
    """ZeRO-3 (+ offload): this rank's partition of the working weight, fp32 master and moments."""
    from deepspeed.utils import safe_get_local_fp32_param, safe_get_local_optimizer_state

    start, length = owned_range(param, numel)
    slots = [
        Slot("weight", param.ds_tensor.detach().view(-1)[:length], start, False),
        Slot("master", safe_get_local_fp32_param(param).view(-1)[:length], start, False),
    ]
    for key in MOMENT_KEYS:
        try:
            value = safe_get_local_optimizer_state(param, key)
        except (KeyError, AssertionError, ValueError):  # no state before the first step
            value = None
        if isinstance(value, Tensor) and value.numel():
            slots.append(Slot(key, value.view(-1)[:length], start, False))
    return slots


def mask_slice(flat_mask: Tensor, slot: Slot) -> Tensor:
    """The mask over `slot`'s entries, on the slot tensor's device and in its dtype.

    Under offload the fp32 master and moments sit on the CPU while the working weight may sit on a GPU:
    a mask made once on one device would be multiplied with tensors on another. (The per-step gradient
    masks are cached by the enforcer; this serves install and verification.)
    """
    tensor = slot.tensor
    return flat_mask.narrow(0, slot.start, tensor.numel()).to(device=tensor.device, dtype=tensor.dtype)


@torch.no_grad()
def zero_pruned(engine, param: nn.Parameter, mask: Tensor) -> None:
    """Set every copy of `param`'s pruned entries to 0.0 on this rank (not collective)."""
    flat = mask.reshape(-1)
    for slot in parameter_slots(engine, param, flat.numel()):
        slot.tensor.mul_(mask_slice(flat, slot))


@torch.no_grad()
def pruned_nonzero_counts(engine, param: nn.Parameter, mask: Tensor) -> dict[str, int]:
    """where -> pruned entries not exactly 0.0 on this rank (replicated copies count on rank 0 only)."""
    flat = mask.reshape(-1)
    counts: dict[str, int] = {}
    for slot in parameter_slots(engine, param, flat.numel()):
        if slot.replicated and dist.rank() != 0:
            continue
        pruned = ~mask_slice(flat, slot).bool()
        bad = int((slot.tensor[pruned] != 0).sum()) if pruned.any() else 0
        counts[slot.where] = counts.get(slot.where, 0) + bad
    return counts


def full_master(engine, param: nn.Parameter) -> Tensor:
    """The whole fp32 master of a replicated (ZeRO 0-2) parameter, as the optimizer holds it.

    Pruning scores and saved models read this, not the module weight, which under bf16/fp16 has lost
    precision. Collective under ZeRO 1-2 (the fragments are all-reduced); local at stage 0.
    """
    if hasattr(param, "_hp_mapping"):
        from deepspeed.utils import safe_get_full_fp32_param

        return safe_get_full_fp32_param(param).detach().float()
    numel = param.numel()
    for slot in parameter_slots(engine, param, numel):
        if slot.where == "master":
            return slot.tensor.view(param.shape).float()
    return param.detach().float()  # fp32 stage 0: the module weight is the master
