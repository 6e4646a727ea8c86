"""What keeping a mask costs, as ratios measured in one run with 2 CPU ranks.

1. Step time with a 60% mask enforced / dense step time, under ZeRO-0, ZeRO-2 and ZeRO-3, in fp32
   and bf16 (the optimizer wrappers a GPU run takes: DeepSpeed runs bf16 on a CPU), on uniter-mini
   and on a uniter-base-sized encoder (12 x 768, random init), in alternating blocks of steps on the
   same engine (so drift hits both alike); and the same for `torch.nn.utils.prune` (a float mask and a
   second copy of every weight) where DeepSpeed runs it.
2. Time and peak RSS growth of the exact distributed threshold (each rank's own partition) against
   gathering the prunable weights and calling `torch.kthvalue`, on a ZeRO-3 engine.
3. Ticket bytes per prunable weight.

Usage, from the repo root:
    python benchmarks/sparsity_overhead.py [--steps 12] [--blocks 4] [--stages 0 2 3]
        [--precisions fp32 bf16] [--models uniter-mini uniter-base] [--no-torch-prune] [--quick]
        [--json out.json]
(`--quick`: 4 steps a block, 2 blocks, ZeRO-2 and 3, uniter-mini only.)
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
from dataclasses import replace
from pathlib import Path

import torch
from gloo_ranks import MMAP_THRESHOLD
from rows import Row, add_output_flags, emit
from rss import PeakRss
from synthetic_steps import BERT_VOCAB, mlm_batches, train_step
from synthetic_steps import engine as build_engine

BATCH = 8
MODELS = ("uniter-mini", "uniter-base")


def _model(name: str):
    """uniter-mini from the shipped MiniLM weights, or a seeded random model of a UNITER preset."""
    from lottery.models.uniter import UniterForPretraining, init_from_bert, preset

    torch.manual_seed(0)
    if name == "uniter-mini":
        model, _ = init_from_bert("minilm", img_dim=2048, num_region_classes=16, name="uniter-mini")
        return model
    return UniterForPretraining(preset(name))


def _batches(model, count: int):
    vocab = replace(BERT_VOCAB, size=model.config.vocab_size)
    return mlm_batches(count, BATCH, feat_dim=model.config.img_dim, vocab=vocab)


def _timed_steps(engine, task, batches, enforcer) -> float:
    """Median seconds per step over `batches`."""
    times = []
    for batch in batches:
        start = time.perf_counter()
        train_step(engine, task, batch, enforcer)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(
    mode: str, stage: int, precision: str, model_name: str, steps: int, blocks: int, out: Path
) -> None:
    from lottery import dist
    from lottery.sparsity.criteria import prune_pieces
    from lottery.sparsity.enforce import MaskEnforcer, verify_pruned
    from lottery.sparsity.maskset import MaskSet
    from lottery.sparsity.partition import engine_pieces, gather_masks
    from lottery.sparsity.scope import parameter_shape

    dist.init()
    torch.set_num_threads(1)
    model = _model(model_name)
    names = model.prunable()
    task, batches = _batches(model, steps)
    result: dict = {"mode": mode, "stage": stage}
    if mode == "torch-prune":
        import torch.nn.utils.prune as torch_prune

        dense_engine = build_engine(_model(model_name), stage, BATCH, precision)  # its own dense baseline
        modules = dict(model.named_modules())
        targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in names]
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=0.6)
        engine = build_engine(model, stage, BATCH, precision)
        _timed_steps(dense_engine, task, batches[:2], None)  # warm-up
        _timed_steps(engine, task, batches[:2], None)
        dense, masked = [], []
        for _ in range(blocks):
            dense.append(_timed_steps(dense_engine, task, batches, None))
            masked.append(_timed_steps(engine, task, batches, None))
    else:
        engine = build_engine(model, stage, BATCH, precision)
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
        if stage == 3 and precision == "fp32":
            result.update(_threshold_costs(engine, dense_masks))
    result["dense_s"] = statistics.median(dense)
    result["masked_s"] = statistics.median(masked)
    if dist.is_main():
        out.write_text(json.dumps(result))
    dist.shutdown()


def _threshold_costs(engine, masks) -> dict:
    """Ours (local partitions) vs gather + kthvalue, on the same ZeRO-3 engine and k."""
    import deepspeed

    from lottery.sparsity.criteria import piece_scores
    from lottery.sparsity.partition import engine_pieces
    from lottery.sparsity.threshold import kth_smallest

    params = dict(engine.module.named_parameters())
    k = round(0.6 * masks.total)
    with PeakRss() as ours_rss:
        start = time.perf_counter()
        pieces = engine_pieces(engine, masks)
        ours = kth_smallest([piece_scores(p, "magnitude", 0) for p in pieces], k)
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


def _launch(mode: str, case: tuple[int, str, str], args: argparse.Namespace, port: int) -> dict | None:
    stage, precision, model_name = case
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
        cmd += [__file__, "--worker", mode, str(stage), precision, model_name]
        cmd += [str(args.steps), str(args.blocks), str(out)]
        env = {**os.environ, **MMAP_THRESHOLD}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "error" in ln]
            print(
                f"  {mode} at ZeRO-{stage} {precision} {model_name} did not run: {lines[-1] if lines else proc.returncode}"
            )
            return None
        return json.loads(out.read_text())


def _ticket_bits_per_weight() -> tuple[int, int]:
    from lottery.sparsity.criteria import cut
    from lottery.tickets.format import TicketMeta, ticket_bytes

    model = _model("uniter-mini")
    params = dict(model.named_parameters())
    weights = {n: params[n].detach() for n in model.prunable()}
    masks = cut(weights, "magnitude", 0.6)
    data = ticket_bytes(masks, TicketMeta(family="uniter", model="uniter-mini", method="magnitude"))
    return len(data), masks.total


def _stage_rows(case: tuple[int, str, str], ours: dict, torch_prune: dict | None) -> list[Row]:
    stage, precision, model_name = case
    rows = [
        Row(
            figure=f"masked / dense step, ZeRO-{stage} {precision} ({model_name}, 2 ranks, batch {BATCH})",
            measured=ours["masked_s"] / ours["dense_s"],
            target="<= 1.02",
            unit="x",
            note=f"dense {ours['dense_s']:.3f} s/step",
        )
    ]
    if torch_prune is not None:
        rows.append(
            Row(
                figure=f"torch.nn.utils.prune / dense step, ZeRO-{stage} {precision} ({model_name})",
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
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 2, 3], choices=(0, 1, 2, 3))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--no-torch-prune", action="store_true", help="skip the torch.nn.utils.prune rows")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    add_output_flags(parser)
    args = parser.parse_args()
    if args.worker:
        mode, stage, precision, model_name, steps, blocks, out = args.worker
        worker(mode, int(stage), precision, model_name, int(steps), int(blocks), Path(out))
        return
    if args.quick:
        args.steps, args.blocks, args.stages, args.models = 4, 2, [2, 3], ["uniter-mini"]
    rows: list[Row] = []
    cases = [(st, pr, mo) for mo in args.models for pr in args.precisions for st in args.stages]
    for i, case in enumerate(cases):
        ours = _launch("ours", case, args, 29800 + i)
        torch_prune = None if args.no_torch_prune else _launch("torch-prune", case, args, 29900 + i)
        if ours is not None:
            rows += _stage_rows(case, ours, torch_prune)
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
