"""Figure 7: a masked ZeRO-3 step of a uniter-large-sized model on 2 CPU ranks fits in 24 GiB (per-rank vs 1 rank).

The job builds a randomly initialised `UniterForPretraining` of the preset (uniter-large: 24 layers x
1024, about 340M parameters; `--preset uniter-base` for 12 x 768), wraps it in a ZeRO-3 fp32 engine
(`build_engine`, as the trainers do), cuts a 60% magnitude mask the library's way (`engine_pieces` ->
`prune_pieces` -> `gather_masks`), installs `MaskEnforcer`, runs masked AdamW steps on synthetic MLM
batches (4 examples a rank), and checks `verify_pruned`. It runs on 2 ranks and then on 1 rank, and
each rank reports its peak RSS (the kernel's VmHWM, since process start) after each phase.

Rows: the 2-rank job's total peak (the sum over its ranks: both live at once; target <= 24 GiB, the
machine), and the per-rank peak on 2 ranks / the 1-rank peak (ZeRO-3's promise is ~1/2 for the
parameters, gradients and Adam moments; what each rank builds whole before partitioning, as every
trainer here does without `zero.Init`, does not shrink).

Heavy: run it once. Usage, from the repo root:
    python benchmarks/zero3_memory.py [--preset uniter-large|uniter-base] [--quick] [--json out.json]
(`--quick`: uniter-base and one step.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from gloo_ranks import torchrun
from rows import Row, add_output_flags, emit
from rss import status_kib
from synthetic_steps import BERT_VOCAB, mlm_batches, train_step
from synthetic_steps import engine as build_engine

BATCH = 4  # per rank, on both world sizes: the activations per rank are alike
MACHINE_GIB = 24


def _peak_gib() -> float:
    return status_kib("VmHWM") / 2**20


def worker(preset: str, steps: int, out_dir: Path) -> None:
    """One rank: build, partition, cut, enforce, step; writes rank<r>.json with the peaks by phase."""
    from lottery import dist
    from lottery.models.uniter import UniterForPretraining
    from lottery.models.uniter import preset as preset_config
    from lottery.sparsity.criteria import prune_pieces
    from lottery.sparsity.enforce import MaskEnforcer, verify_pruned
    from lottery.sparsity.maskset import MaskSet
    from lottery.sparsity.partition import engine_pieces, gather_masks
    from lottery.sparsity.scope import parameter_shape

    dist.init()
    peaks: dict[str, float] = {"start": _peak_gib()}
    torch.manual_seed(0)
    config = preset_config(preset)
    model = UniterForPretraining(config)
    params = sum(p.numel() for p in model.parameters())
    peaks["model built"] = _peak_gib()
    engine = build_engine(model, stage=3, batch_size=BATCH)
    peaks["ZeRO-3 engine"] = _peak_gib()
    named = dict(engine.module.named_parameters())
    dense = MaskSet.dense({n: parameter_shape(named[n]) for n in model.prunable()})
    pieces = engine_pieces(engine, dense)
    masks = gather_masks(pieces, prune_pieces(pieces, "magnitude", 0.6), dense)
    del pieces
    enforcer = MaskEnforcer(engine, masks)
    peaks["mask cut + installed"] = _peak_gib()
    vocab = replace(BERT_VOCAB, size=config.vocab_size)  # the presets' cased vocabulary is smaller
    task, batches = mlm_batches(steps, BATCH, feat_dim=config.img_dim, vocab=vocab, seed=1 + dist.rank())
    times = []
    for batch in batches:
        start = time.perf_counter()
        train_step(engine, task, batch, enforcer)
        times.append(time.perf_counter() - start)
    verify_pruned(engine, masks, "after the masked steps")
    peaks["masked steps"] = _peak_gib()
    result = {"params": params, "peaks": peaks, "step_s": times}
    Path(out_dir, f"rank{dist.rank()}.json").write_text(json.dumps(result))
    dist.shutdown()


def _job(preset: str, steps: int, ranks: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        torchrun(__file__, ranks, ["--worker", preset, str(steps), out])
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(ranks)]


def measure(preset: str, steps: int) -> list[Row]:
    """Figure 7's rows; prints each job's peaks by phase."""
    jobs = {ranks: _job(preset, steps, ranks) for ranks in (2, 1)}
    for ranks, results in jobs.items():
        for rank, result in enumerate(results):
            phases = ", ".join(f"{phase} {gib:.2f}" for phase, gib in result["peaks"].items())
            steps_s = ", ".join(f"{s:.1f}" for s in result["step_s"])
            print(f"{ranks} rank(s), rank {rank}: peak GiB after {phases}; step s {steps_s}", flush=True)
    two = [r["peaks"]["masked steps"] for r in jobs[2]]
    one = jobs[1][0]["peaks"]["masked steps"]
    params = jobs[1][0]["params"] / 1e6
    return [
        Row(
            figure=f"7. masked ZeRO-3 step, {preset} ({params:.0f}M params), 2 ranks: total peak RSS",
            measured=sum(two),
            target=f"<= {MACHINE_GIB}",
            unit="GiB",
            note="ranks " + " + ".join(f"{g:.2f}" for g in two),
        ),
        Row(
            figure="7. ... per-rank peak RSS on 2 ranks / 1-rank peak",
            measured=max(two) / one,
            target="reported",
            unit="x",
            note=f"1 rank {one:.2f} GiB; median step {statistics.median(jobs[2][0]['step_s']):.1f} s on 2 ranks",
        ),
    ]


def main() -> None:
    if "--worker" in sys.argv:
        preset, steps, out = sys.argv[sys.argv.index("--worker") + 1 :][:3]
        worker(preset, int(steps), Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="uniter-large", choices=("uniter-large", "uniter-base"))
    parser.add_argument("--steps", type=int, default=2)
    add_output_flags(parser)
    args = parser.parse_args()
    preset, steps = ("uniter-base", 1) if args.quick else (args.preset, args.steps)
    emit(measure(preset, steps), args.json)


if __name__ == "__main__":
    main()
