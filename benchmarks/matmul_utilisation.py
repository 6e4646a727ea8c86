"""Figure 6: a pre-training step's achieved matmul FLOP/s / this machine's matmul peak, same run (reported).

One rank with one torch thread (what each of the 2 CPU ranks gets), uniter-mini at ZeRO-0 fp32, MLM
steps of 16 synthetic examples (20 tokens + 8 regions of 2048 features, shaped like the shapes world).

- **FLOPs** of one step: `torch.utils.flop_counter.FlopCounterMode` over forward and backward (it
  counts matrix products: mm, addmm, bmm and attention; the optimiser and element-wise work are 0 FLOPs
  by its reckoning, and are part of what the ratio shows missing).
- **step time**: the median of timed steps (forward, backward, AdamW step).
- **peak**: the median time of a 2048 x 2048 fp32 `torch.matmul`, 2 n^3 FLOPs, in the same process
  and thread count, just before the steps.

Where the rest goes: `torch.profiler` over a few steps, ops ranked by self CPU time; the rows give the
share of step time spent inside the matrix-product ops, those ops' own FLOP/s / peak (small matrices
run below peak), and the top other ops. The full ranking is printed.

Usage, from the repo root:  python benchmarks/matmul_utilisation.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rows import Row, add_output_flags, emit
from synthetic_steps import engine as build_engine
from synthetic_steps import mlm_batches, train_step

BATCH = 16
PEAK_SIZE = 2048
# the aten ops FlopCounterMode counts FLOPs for, as the CPU profiler names them
MATMUL_OPS = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
}


def matmul_peak(size: int, repeats: int) -> float:
    """FLOP/s of a size x size fp32 matmul on this process's threads (median of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up: packing buffers, thread pool
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def step_flops(engine, task, batch: dict) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward + backward, total and by op (the step itself is taken, so weights move)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss, _ = engine(batch, task)
        engine.backward(loss)
    engine.step()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops(), by_op


def profile(engine, task, batches: list[dict]) -> list[tuple[str, float]]:
    """(op, self CPU seconds) over `batches`' steps, largest first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            train_step(engine, task, batch)
    ranked = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    return sorted(ranked, key=lambda kv: -kv[1])


def measure(steps: int, profiled: int) -> list[Row]:
    """Figure 6's rows; prints the profile's ranking."""
    from lottery import dist
    from lottery.models.uniter import init_from_bert

    dist.init()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = init_from_bert("minilm", img_dim=2048, num_region_classes=16, name="uniter-mini")
    engine = build_engine(model, stage=0, batch_size=BATCH)
    task, batches = mlm_batches(max(steps, profiled) + 2, BATCH, feat_dim=2048)
    train_step(engine, task, batches[0])  # warm-up
    flops, by_op = step_flops(engine, task, batches[1])
    peak = matmul_peak(PEAK_SIZE, repeats=5)
    times = []
    for batch in batches[2 : 2 + steps]:
        start = time.perf_counter()
        train_step(engine, task, batch)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    ranked = profile(engine, task, batches[2 : 2 + profiled])
    dist.shutdown()

    total = sum(seconds for _, seconds in ranked)
    matmul_s = sum(seconds for op, seconds in ranked if op in MATMUL_OPS)
    print(f"profile of {profiled} steps, ops by self CPU time (total {total:.2f} s):")
    for op, seconds in ranked[:15]:
        print(f"  {op:<60} {seconds:7.3f} s  {100 * seconds / total:5.1f}%")
    print("FLOPs by op (one step): " + ", ".join(f"{op} {n / 1e9:.2f} G" for op, n in by_op.items()))
    others = [(op, s) for op, s in ranked if op not in MATMUL_OPS][:4]
    return [
        Row(
            figure="6. pre-training step matmul FLOP/s / machine matmul peak (uniter-mini, 1 thread)",
            measured=flops / step_s / peak,
            target="reported",
            unit="x",
            note=f"{flops / 1e9:.1f} GFLOP/step in {step_s:.3f} s; peak {peak / 1e9:.1f} GFLOP/s ({PEAK_SIZE}^2 fp32)",
        ),
        Row(
            figure="6. ... share of step self CPU time in matmul ops",
            measured=matmul_s / total,
            target="reported",
            unit="x",
            note="rest: "
            + ", ".join(f"{op.removeprefix('aten::')} {100 * s / total:.0f}%" for op, s in others),
        ),
        Row(
            figure="6. ... matmul ops' own FLOP/s / peak",
            measured=flops * profiled / matmul_s / peak,
            target="reported",
            unit="x",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_flags(parser)
    args = parser.parse_args()
    emit(measure(steps=4, profiled=2) if args.quick else measure(steps=12, profiled=4), args.json)


if __name__ == "__main__":
    main()
