"""Pre-training throughput of uniter-mini on 2 ranks under each ZeRO stage, as a ratio to ZeRO-0.

Runs `lottery pretrain` through the `deepspeed` launcher once per stage on the same data and model
(built on first use, as the main job does), and reports the median samples/s over the logged steps
after a warm-up. Usage (from the repo root):

    python benchmarks/pretrain_zero_stages.py [--steps 60] [--stages 0 1 2 3] [--workdir bench-runs]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from lottery.train.metrics import read_metrics


def run_stage(stage: int, steps: int, workdir: Path, port: int) -> float:
    run_dir = workdir / f"zero{stage}"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"run_dir={run_dir}",
        f"train.zero_stage={stage}",
        "data.curriculum=[]",  # the main scenes throughout
        f"train.steps={steps}",
        "train.log_every=1",
        f"train.val_every={steps}",
        "train.val_at_start=false",
        "train.val_batches=2",
        f"train.ckpt_every={steps}",
    ]
    cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(port), "--module", "lottery", "pretrain"]
    subprocess.run(cmd + ["--config", "pretrain-uniter-mini", *overrides], check=True, capture_output=True)
    rates = [r["samples_per_s"] for r in read_metrics(run_dir / "metrics.jsonl") if "samples_per_s" in r]
    return statistics.median(rates[len(rates) // 4 :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--workdir", type=Path, default=Path("bench-runs"))
    args = parser.parse_args()
    rates = {}
    for i, stage in enumerate(args.stages):
        rates[stage] = run_stage(stage, args.steps, args.workdir, 29700 + i)
        print(f"ZeRO-{stage}: {rates[stage]:.1f} samples/s", flush=True)
    base = rates[args.stages[0]]
    print(f"\nsamples/s on 2 ranks, ratio to ZeRO-{args.stages[0]} measured in this run:")
    for stage, rate in rates.items():
        print(f"  ZeRO-{stage}: {rate:7.1f} samples/s  x{rate / base:.3f}")


if __name__ == "__main__":
    sys.exit(main())
