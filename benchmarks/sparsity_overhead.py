"""What keeping a mask costs, as ratios measured in one run on uniter-mini with 2 CPU ranks.

1. Step time with a 60% mask enforced / dense step time, under ZeRO-0, ZeRO-2 and ZeRO-3, in alternating
   blocks of steps on the same engine (so drift hits both alike); and the same for
   `torch.nn.utils.prune` (a float mask and a second copy of every weight) where DeepSpeed runs it.
2. Time and peak RSS growth of the exact distributed threshold (each rank's own partition) against
   gathering the prunable weights and calling `torch.kthvalue`, on a ZeRO-3 engine.
3. Ticket bytes per prunable weight.

Usage, from the repo root:
    python benchmarks/sparsity_overhead.py [--steps 12] [--blocks 4] [--quick] [--json out.json]
(`--quick`: 4 steps a block, 2 blocks.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from gloo_ranks import MMAP_THRESHOLD
from rows import Row, add_output_flags, emit
from rss import PeakRss


def _model():
    from lottery.models.uniter import init_from_bert

    torch.manual_seed(0)
    model, _ = init_from_bert("minilm", img_dim=2048, num_region_classes=16, name="uniter-mini")
    return model


def _batches(count: int):
    from types import SimpleNamespace

    from lottery.tasks.masking import TextVocab
    from lottery.tasks.pretrain import TASKS, CollateContext

    vocab = TextVocab(size=30522, pad_id=0, cls_id=101, sep_id=102, mask_id=103)
    gen = torch.Generator().manual_seed(1)
    task = TASKS["mlm"]
    out = []
    for i in range(count):
        examples = [
            SimpleNamespace(
                input_ids=[101, *torch.randint(1000, 30000, (18,), generator=gen).tolist(), 102],
                feat=torch.randn(8, 2048, generator=gen),
                box=torch.rand(8, 7, generator=gen),
                soft=None,
            )
            for _ in range(8)
        ]
        out.append(task.collate(examples, CollateContext(vocab), torch.Generator().manual_seed(i)))
    return task, out


def _engine(model, stage: int):
    from lottery.config import OptimConfig, TrainConfig
    from lottery.train.engine import build_engine

    train = TrainConfig(steps=10_000, batch_size=8, zero_stage=stage)
    return build_engine(model, train, OptimConfig(warmup_steps=0))[0]


def _timed_steps(engine, task, batches, enforcer) -> float:
    """Median seconds per step over `batches`."""
    times = []
    for batch in batches:
        start = time.perf_counter()
        loss, _ = engine(batch, task)
        engine.backward(loss)
        if enforcer is not None:
            enforcer.before_step()
        engine.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(mode: str, stage: int, steps: int, blocks: int, out: Path) -> None:
    from lottery import dist
    from lottery.sparsity.criteria import prune_pieces
    from lottery.sparsity.enforce import MaskEnforcer, verify_pruned
    from lottery.sparsity.maskset import MaskSet
    from lottery.sparsity.partition import engine_pieces, gather_masks
    from lottery.sparsity.scope import parameter_shape

    dist.init()
    torch.set_num_threads(1)
    model = _model()
    names = model.prunable()
    task, batches = _batches(steps)
    result: dict = {"mode": mode, "stage": stage}
    if mode == "torch-prune":
        import torch.nn.utils.prune as torch_prune

        dense_engine = _engine(_model(), stage)  # its own dense baseline, timed in alternation
        modules = dict(model.named_modules())
        targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in names]
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=0.6)
        engine = _engine(model, stage)
        _timed_steps(dense_engine, task, batches[:2], None)  # warm-up
        _timed_steps(engine, task, batches[:2], None)
        dense, masked = [], []
        for _ in range(blocks):
            dense.append(_timed_steps(dense_engine, task, batches, None))
            masked.append(_timed_steps(engine, task, batches, None))
        result["dense_s"] = statistics.median(dense)
        result["masked_s"] = statistics.median(masked)
    else:
        engine = _engine(model, stage)
        params = dict(engine.module.named_parameters())
        dense_masks = MaskSet.dense({n: parameter_shape(params[n]) for n in names})
        pieces = engine_pieces(engine, dense_masks)
        masks = gather_masks(pieces, prune_pieces(pieces, "magnitude", 0.6), dense_masks)
        _timed_steps(engine, task, batches[:2], None)  # warm-up
        dense, masked = [], []
        enforcer = MaskEnforcer(engine, masks)
        for _ in range(blocks):
            enforcer.remove()
            dense.append(_timed_steps(engine, task, batches, None))
            enforcer.install(masks)
            masked.append(_timed_steps(engine, task, batches, enforcer))
        verify_pruned(engine, masks)
        result["dense_s"] = statistics.median(dense)
        result["masked_s"] = statistics.median(masked)
        if stage == 3:
            result.update(_threshold_costs(engine, dense_masks))
    if dist.is_main():
        out.write_text(json.dumps(result))
    dist.shutdown()


def _threshold_costs(engine, masks) -> dict:
    """Ours (local partitions) vs gather + kthvalue, on the same ZeRO-3 engine and k."""
    import deepspeed

    from lottery.sparsity.partition import engine_pieces
    from lottery.sparsity.threshold import kth_smallest

    params = dict(engine.module.named_parameters())
    k = round(0.6 * masks.total)
    with PeakRss() as ours_rss:
        start = time.perf_counter()
        pieces = engine_pieces(engine, masks)
        ours = kth_smallest([p.weights.abs() for p in pieces], k)
        ours_s = time.perf_counter() - start
    del pieces
    chosen = [params[n] for n in masks.masks]
    with PeakRss() as gather_rss:
        start = time.perf_counter()
        with deepspeed.zero.GatheredParameters(chosen):
            whole = torch.cat([p.detach().abs().reshape(-1) for p in chosen])
        theirs = float(torch.kthvalue(whole, k).values)
        gather_s = time.perf_counter() - start
    del whole
    return {
        "threshold_equal": ours == theirs,
        "threshold_ours_s": ours_s,
        "threshold_gather_s": gather_s,
        "threshold_ours_rss": ours_rss.growth,
        "threshold_gather_rss": gather_rss.growth,
    }


def _launch(mode: str, stage: int, args: argparse.Namespace, port: int) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
        ]
        cmd += [__file__, "--worker", mode, str(stage), str(args.steps), str(args.blocks), str(out)]
        env = {**os.environ, **MMAP_THRESHOLD}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "error" in ln]
            print(f"  {mode} at ZeRO-{stage} did not run: {lines[-1] if lines else proc.returncode}")
            return None
        return json.loads(out.read_text())


def _ticket_bits_per_weight() -> tuple[int, int]:
    from lottery.sparsity.criteria import cut
    from lottery.tickets.format import TicketMeta, ticket_bytes

    model = _model()
    params = dict(model.named_parameters())
    weights = {n: params[n].detach() for n in model.prunable()}
    masks = cut(weights, "magnitude", 0.6)
    data = ticket_bytes(masks, TicketMeta(family="uniter", model="uniter-mini", method="magnitude"))
    return len(data), masks.total


def _stage_rows(stage: int, ours: dict, torch_prune: dict | None) -> list[Row]:
    rows = [
        Row(
            figure=f"masked / dense step, ZeRO-{stage} (uniter-mini, 2 ranks, batch 8)",
            measured=ours["masked_s"] / ours["dense_s"],
            target="<= 1.02",
            unit="x",
            note=f"dense {ours['dense_s']:.3f} s/step",
        )
    ]
    if torch_prune is not None:
        rows.append(
            Row(
                figure=f"torch.nn.utils.prune / dense step, ZeRO-{stage}",
                measured=torch_prune["masked_s"] / torch_prune["dense_s"],
                target="reported",
                unit="x",
                note=f"dense {torch_prune['dense_s']:.3f} s/step",
            )
        )
    if "threshold_ours_s" in ours:
        rows += [
            Row(
                figure=f"threshold == gather + kthvalue, ZeRO-{stage}",
                measured="yes" if ours["threshold_equal"] else "no",
                target="identical",
            ),
            Row(
                figure=f"threshold time, ours / gather + kthvalue, ZeRO-{stage}",
                measured=ours["threshold_ours_s"] / ours["threshold_gather_s"],
                target="reported",
                unit="x",
                note=f"{ours['threshold_ours_s']:.3f} s vs {ours['threshold_gather_s']:.3f} s",
            ),
            Row(
                figure=f"threshold peak RSS growth, ours / gather + kthvalue, ZeRO-{stage}",
                measured=ours["threshold_ours_rss"] / max(1, ours["threshold_gather_rss"]),
                target="reported",
                unit="x",
                note=f"{ours['threshold_ours_rss'] / 2**20:.1f} MiB vs {ours['threshold_gather_rss'] / 2**20:.1f} MiB",
            ),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=4, help="dense/masked block pairs")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    add_output_flags(parser)
    args = parser.parse_args()
    if args.worker:
        mode, stage, steps, blocks, out = args.worker
        worker(mode, int(stage), int(steps), int(blocks), Path(out))
        return
    if args.quick:
        args.steps, args.blocks = 4, 2
    rows: list[Row] = []
    for i, stage in enumerate((0, 2, 3)):  # 0: what IMP and the fine-tunes run by default
        ours = _launch("ours", stage, args, 29800 + i)
        torch_prune = _launch("torch-prune", stage, args, 29810 + i)
        if ours is not None:
            rows += _stage_rows(stage, ours, torch_prune)
    size, total = _ticket_bits_per_weight()
    rows.append(
        Row(
            figure="ticket bits / prunable weight (uniter-mini scope, magnitude 60%)",
            measured=8 * size / total,
            target="reported",
            note=f"{size:,} bytes for {total:,} weights",
        )
    )
    emit(rows, args.json)


if __name__ == "__main__":
    main()
