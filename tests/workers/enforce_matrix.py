"""A rank of the enforcement matrix: one ZeRO layout, every precision this machine runs, accumulation 2.

Run by tests/integration/test_enforce_matrix.py through torchrun. For each precision: a 50% mask on the odd-sized
model, 8 steps of AdamW (lr 1e-2, weight decay 0.1, clipping 0.5, 2 micro-batches a step), then every
copy of every prunable weight read back through DeepSpeed's own accessors, not the enforcer's: the
gathered module weight, the fp32 master and both Adam moments. Rank 0 writes the counts as JSON.
"""

from __future__ import annotations

import gc
import json
import sys
from contextlib import nullcontext

import deepspeed
import torch
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state
from sparsity_engine import ODD, VOCAB, _examples

from lottery import dist
from lottery.config import OptimConfig, TrainConfig
from lottery.models.uniter import UniterForPretraining
from lottery.sparsity.enforce import MaskEnforcer
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.scope import parameter_shape, prunable_parameters
from lottery.tasks.pretrain import TASKS, CollateContext
from lottery.train.batches import to_device
from lottery.train.engine import build_engine, working_dtype

STEPS = 8


def _weight(engine, param) -> torch.Tensor:
    with (
        deepspeed.zero.GatheredParameters([param]) if engine.zero_optimization_stage() == 3 else nullcontext()
    ):
        return param.detach().float().clone()


def _copies(engine, param) -> dict[str, torch.Tensor]:
    """Every copy of `param`, whole and in fp32, read the way a user of DeepSpeed would (collective)."""
    stage = engine.zero_optimization_stage()
    copies = {"weight": _weight(engine, param)}
    if stage > 0:
        copies["master"] = safe_get_full_fp32_param(param).float()
        for key in ("exp_avg", "exp_avg_sq"):
            copies[key] = safe_get_full_optimizer_state(param, key).float()
        return copies
    optimizer = engine.optimizer
    if isinstance(optimizer, torch.optim.Optimizer):  # fp32: the module weight is the master
        master, state = param, optimizer.state[param]
    else:  # bf16/fp16: the wrapper's fp32 twin
        twins = {
            id(lp): hp
            for g, h in zip(optimizer.fp16_groups, optimizer.fp32_groups, strict=True)
            for lp, hp in zip(g, h, strict=True)
        }
        master = twins[id(param)]
        state = optimizer.optimizer.state[master]
    copies["master"] = master.detach().float().view(param.shape)
    for key in ("exp_avg", "exp_avg_sq"):
        copies[key] = state[key].float().view(param.shape)
    return copies


def run_case(layout: str, precision: str) -> dict:
    torch.manual_seed(0)
    model = UniterForPretraining(ODD)
    names = list(prunable_parameters(model))
    stage = 3 if layout.startswith("zero3") else int(layout[-1])
    train = TrainConfig(
        steps=STEPS, batch_size=2, grad_accum=2, zero_stage=stage, ds_config=layout, precision=precision
    )
    optim = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=0, grad_clip=0.5)
    engine, resolved = build_engine(model, train, optim)
    dtype = working_dtype(resolved)
    params = dict(engine.module.named_parameters())
    generator = torch.Generator().manual_seed(7)
    masks = MaskSet(
        {n: torch.rand(parameter_shape(params[n]), generator=generator) > 0.5 for n in names}, fingerprint="x"
    )
    before = {n: _weight(engine, params[n]) for n in names}
    enforcer = MaskEnforcer(engine, masks)
    ctx = CollateContext(VOCAB, 0.3, 0.5)
    for step in range(1, STEPS + 1):
        for micro in range(2):
            task = TASKS[["mlm", "itm", "mrfr", "mrckl"][(2 * step + micro) % 4]]
            examples = _examples(1000 * dist.rank() + 10 * step + micro)
            batch = task.collate(examples, ctx, torch.Generator().manual_seed(step))
            loss, _ = engine(to_device(batch, engine.device, dtype), task)
            engine.backward(loss)
            enforcer.before_step()
            engine.step()
    revived: dict[str, int] = {"weight": 0, "master": 0, "exp_avg": 0, "exp_avg_sq": 0}
    kept_changed = kept_total = 0
    for name in names:
        copies = _copies(engine, params[name])
        pruned = ~masks.masks[name]
        for where, value in copies.items():
            revived[where] += int((value[pruned] != 0).sum())
        kept = masks.masks[name]
        kept_changed += int((copies["weight"][kept] != before[name][kept]).sum())
        kept_total += int(kept.sum())
    result = {
        "precision": resolved,
        "wrapper": type(engine.optimizer).__name__,
        "revived": revived,
        "kept_changed_fraction": kept_changed / kept_total,
        "loss_finite": bool(torch.isfinite(loss.detach().float())),
    }
    enforcer.remove()
    del engine, enforcer, model
    gc.collect()
    return result


def main(layout: str, out_path: str, precisions: list[str]) -> None:
    dist.init()
    results = {p: run_case(layout, p) for p in precisions}
    if dist.is_main():
        with open(out_path, "w") as f:
            json.dump({"world": dist.world_size(), "cases": results}, f)
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
