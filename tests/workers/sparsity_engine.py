"""A rank of the sparsity tests: exact threshold, 60% mask, 50 AdamW steps, a mid-training prune.

Run by tests/integration/test_sparsity_distributed.py through torchrun; rank 0 writes what it measured as JSON.
Tests only may gather whole parameters (to compare with torch's own answers); the code under test never does.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import deepspeed
import torch

from lottery import dist
from lottery.config import OptimConfig, TrainConfig
from lottery.models.uniter import UniterConfig, UniterForPretraining
from lottery.sparsity.criteria import prune_pieces
from lottery.sparsity.enforce import MaskEnforcer, pruned_nonzeros
from lottery.sparsity.maskset import MaskSet
from lottery.sparsity.partition import engine_pieces, gather_masks
from lottery.sparsity.scope import parameter_shape, prunable_parameters
from lottery.sparsity.threshold import kth_smallest, select_smallest
from lottery.tasks.masking import TextVocab
from lottery.tasks.pretrain import TASKS, CollateContext
from lottery.train.engine import build_engine

VOCAB = TextVocab(size=50, pad_id=0, cls_id=1, sep_id=2, mask_id=3, first_word_id=5)
# hidden 33: 33 x 33 = 1089 weights per attention matrix, odd, so ZeRO-3 pads its last partition
ODD = UniterConfig(
    name="odd",
    vocab_size=VOCAB.size,
    hidden_size=33,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=66,
    img_dim=12,
    num_region_classes=5,
)


def _examples(seed: int) -> list[SimpleNamespace]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(4):
        words, regions = 6, 4
        ids = [VOCAB.cls_id, *torch.randint(5, VOCAB.size, (words,), generator=gen).tolist(), VOCAB.sep_id]
        out.append(
            SimpleNamespace(
                input_ids=ids,
                feat=torch.randn(regions, 12, generator=gen),
                box=torch.rand(regions, 7, generator=gen),
                soft=torch.softmax(torch.randn(regions, 5, generator=gen), -1),
            )
        )
    return out


def _gathered(engine, names):
    """Whole fp32 weights, for comparing with torch on the gathered model (tests only)."""
    params = dict(engine.module.named_parameters())
    chosen = [params[n] for n in names]
    stage3 = engine.zero_optimization_stage() == 3
    with deepspeed.zero.GatheredParameters(chosen) if stage3 else nullcontext():
        return {n: p.detach().float().clone() for n, p in zip(names, chosen, strict=True)}


def _revived(engine, masks) -> int:
    return sum(sum(where.values()) for where in pruned_nonzeros(engine, masks).values())


def main(layout: str, out_path: str, enforced: bool) -> None:
    """`layout`: a lottery/ds_configs/ name (zero0 ... zero3, zero3_offload)."""
    started = time.perf_counter()
    dist.init()
    torch.manual_seed(0)
    model = UniterForPretraining(ODD)
    names = list(prunable_parameters(model))
    stage = 3 if layout.startswith("zero3") else int(layout[-1])
    train = TrainConfig(steps=50, batch_size=4, zero_stage=stage, ds_config=layout, seed=0)
    optim = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=0, grad_clip=0.5)
    engine, _ = build_engine(model, train, optim)
    params = dict(engine.module.named_parameters())
    shapes = {n: parameter_shape(params[n]) for n in names}
    dense = MaskSet.dense(shapes)
    result: dict = {"world": dist.world_size(), "layout": layout}

    # 1. the exact k-th smallest |w| versus torch.kthvalue on the gathered weights
    pieces = engine_pieces(engine, dense)
    whole = torch.cat([w.abs().reshape(-1) for w in _gathered(engine, names).values()])
    result["padded"] = [
        n
        for n in names
        if hasattr(params[n], "ds_tensor")
        and params[n].ds_tensor.ds_numel * dist.world_size() > params[n].ds_numel
    ]
    scores = [p.weights.abs() for p in pieces]
    result["threshold_cases"] = []
    for k in (1, 17, whole.numel() // 2, int(0.6 * whole.numel()), whole.numel()):
        ours = kth_smallest(scores, k)
        theirs = float(torch.kthvalue(whole, k).values)
        chosen = select_smallest(scores, k)
        count = int(dist.all_reduce_tensor(torch.tensor([sum(int(c.sum()) for c in chosen)]))[0])
        result["threshold_cases"].append({"k": k, "ours": ours, "kthvalue": theirs, "selected": count})

    # 2. a 60% global magnitude mask, equal to the one torch prunes on the gathered weights
    masks = gather_masks(pieces, prune_pieces(pieces, "magnitude", 0.6), dense)
    reference = whole.kthvalue(round(0.6 * whole.numel())).values
    ours_flat = torch.cat([m.reshape(-1) for m in masks.masks.values()])
    result["sparsity_60"] = masks.sparsity
    result["mask_matches_reference"] = bool(torch.equal(ours_flat, whole > reference))

    result["seconds_setup_and_threshold"] = time.perf_counter() - started
    started = time.perf_counter()
    # 3. install, train 50 steps (AdamW, weight decay, clipping), prune further at step 25
    before = _gathered(engine, names)
    enforcer = MaskEnforcer(engine, masks)
    if not enforced:  # the control: zeroed once, then left to the optimizer
        enforcer.remove()
        enforcer.partitioned = False
    result["nonzero_after_install"] = _revived(engine, masks)
    result["nonzero_per_step"] = []
    for step in range(1, 51):
        task = TASKS[["mlm", "itm", "mrfr", "mrckl"][step % 4]]
        ctx = CollateContext(VOCAB, 0.3, 0.5)
        batch = task.collate(_examples(1000 * dist.rank() + step), ctx, torch.Generator().manual_seed(step))
        loss, _ = engine(batch, task)
        engine.backward(loss)
        enforcer.before_step()
        engine.step()
        if step == 25:
            pieces = engine_pieces(engine, masks)
            masks = gather_masks(pieces, prune_pieces(pieces, "magnitude", 0.7), masks)
            enforcer.install(masks)
            if not enforced:
                enforcer.remove()
            result["sparsity_mid"] = masks.sparsity
        result["nonzero_per_step"].append(_revived(engine, masks))
    after = _gathered(engine, names)
    pruned_values = torch.cat([after[n][~masks.masks[n]] for n in names])
    kept_before = torch.cat([before[n][masks.masks[n]] for n in names])
    kept_after = torch.cat([after[n][masks.masks[n]] for n in names])
    result["gathered_pruned_nonzero"] = int((pruned_values != 0).sum())
    result["kept_changed_fraction"] = float((kept_before != kept_after).float().mean())
    result["final_loss"] = float(loss.detach())
    result["seconds_train"] = time.perf_counter() - started
    if dist.is_main():
        with open(out_path, "w") as f:
            json.dump(result, f)
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], enforced=sys.argv[3:] != ["unenforced"])
