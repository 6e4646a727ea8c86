"""Pre-training throughput of uniter-mini under one layout or another, as ratios to the first measured.

Each variant runs `lottery pretrain` (the main scenes throughout, a global batch of 32 samples a
step) on the same data and model, and the median samples/s over its logged steps after a warm-up is
compared with the first variant's, measured in the same run (machines differ by up to 2x; only the
ratio carries over). Comparisons:

- ``stages``: 2 ranks under DeepSpeed at ZeRO-0, 1, 2 and 3;
- ``layout``: the cores spent on 2 ranks of 1 thread, or on 1 rank of 2 threads (no all-reduce);
- ``precision``: fp32 or bf16, on 1 rank of 2 threads and on 2 ranks of 1 thread (bf16 is fast only
  where the CPU multiplies it natively, e.g. AVX512-BF16 or AMX; `lscpu` lists the flags; on 2 ranks
  DeepSpeed's bf16 optimizer wrapper adds its fp32 master copies to every step).

Usage (from the repo root):

    python benchmarks/pretrain_throughput.py {stages,layout,precision} [--steps 40] [--workdir bench-runs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from lottery.train.metrics import read_metrics

GLOBAL_BATCH = 32
# variant name -> (ranks, overrides)
COMPARISONS: dict[str, dict[str, tuple[int, list[str]]]] = {
    "stages": {f"ZeRO-{stage}": (2, [f"train.zero_stage={stage}"]) for stage in range(4)},
    "layout": {"2 ranks x 1 thread": (2, []), "1 rank x 2 threads": (1, [])},
    "precision": {
        "fp32": (1, ["train.precision=fp32"]),
        "bf16": (1, ["train.precision=bf16"]),
        "fp32, 2 ranks": (2, ["train.precision=fp32"]),
        "bf16, 2 ranks": (2, ["train.precision=bf16"]),
    },
}


def samples_per_s(ranks: int, extra: list[str], steps: int, run_dir: Path, port: int) -> float:
    """Median samples/s of `lottery pretrain` on `ranks` ranks sharing this machine's cores."""
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"run_dir={run_dir}",
        "data.curriculum=[]",
        f"train.batch_size={GLOBAL_BATCH // ranks}",
        f"train.steps={steps}",
        "train.log_every=1",
        f"train.val_every={steps}",
        "train.val_at_start=false",
        "train.val_batches=2",
        f"train.ckpt_every={steps}",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # each rank takes its share
    if ranks == 1:
        launcher = [sys.executable, "-m", "lottery"]
    else:
        launcher = ["deepspeed", "--num_gpus", str(ranks), "--master_port", str(port), "--module", "lottery"]
    cmd = [*launcher, "pretrain", "--config", "pretrain-uniter-mini", *overrides]
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    rates = [r["samples_per_s"] for r in read_metrics(run_dir / "metrics.jsonl") if "samples_per_s" in r]
    return statistics.median(rates[len(rates) // 4 :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=sorted(COMPARISONS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=Path("bench-runs"))
    args = parser.parse_args()
    rates = {}
    for i, (name, (ranks, extra)) in enumerate(COMPARISONS[args.comparison].items()):
        rates[name] = samples_per_s(ranks, extra, args.steps, args.workdir / f"variant{i}", 29700 + i)
        print(f"{name}: {rates[name]:.1f} samples/s", flush=True)
    first = next(iter(rates))
    print(f"\nsamples/s at a global batch of {GLOBAL_BATCH}, ratio to {first} measured in this run:")
    for name, rate in rates.items():
        print(f"  {name:<20} {rate:7.1f} samples/s  x{rate / rates[first]:.3f}")


if __name__ == "__main__":
    sys.exit(main())
