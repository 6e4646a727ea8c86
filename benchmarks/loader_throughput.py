"""Figure 5: data loader samples/s / training samples/s, per rank of 2 ranks x 1 worker, uniter-mini (target >= 3).

Both on one shapes world built with `lottery data shapes` (region features of 2048, as
`pretrain-uniter-mini` trains) and one uniter-mini built with `lottery model init --from-bert minilm`:

- **training**: `lottery pretrain --config pretrain-uniter-mini` on 2 ranks (the deepspeed launcher,
  ZeRO-0, batch 16 a rank, `data.num_workers=1`), the median of its logged `samples_per_s` after a
  warm-up quarter, halved to a rank's share. The trainer's step time includes waiting for its loader
  and collating, so a loader that cannot keep up shows here as a ratio near 1.
- **loader alone**: in this one process (1 torch thread, as each rank has), rank 0's stream of the
  same 2-rank job, `lottery.data.pipeline.example_stream` with 1 worker process, each batch collated
  by the task the mix draws, exactly what the training loop asks for a step, with no model. Alone,
  the loader's worker has a core to itself; in training it shares the 2 cores with both ranks, so the
  ratio is the loader's headroom on a quiet core, not a promise under contention.

Usage, from the repo root:  python benchmarks/loader_throughput.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rows import Row, add_output_flags, emit

BATCH = 16  # per rank, as pretrain-uniter-mini
RANKS = 2
MIX = {"itm": 3, "mlm": 3, "mrfr": 1, "mrckl": 1}  # pretrain-uniter-mini's tasks.mix


@dataclass(frozen=True)
class World:
    """The shapes world's settings; `lottery pretrain` refuses a data.dir built from others."""

    train: int
    val: int
    per_shard: int
    feat_dim: int = 2048

    def build_args(self, out: Path) -> list[str]:
        return [
            "data",
            "shapes",
            "--out",
            str(out),
            "--train",
            str(self.train),
            "--val",
            str(self.val),
            "--samples-per-shard",
            str(self.per_shard),
            "--feat-dim",
            str(self.feat_dim),
        ]

    def overrides(self, data_dir: Path) -> list[str]:
        return [
            f"data.dir={data_dir}",
            "data.seed=0",
            f"data.train_samples={self.train}",
            f"data.val_samples={self.val}",
            f"data.samples_per_shard={self.per_shard}",
            f"data.feat_dim={self.feat_dim}",
            "data.curriculum=[]",
        ]


def _lottery(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "lottery", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"lottery {' '.join(args[:2])} failed:\n{proc.stderr[-2000:]}")


def training_rate(world: World, data_dir: Path, model_dir: Path, run_dir: Path, steps: int) -> float:
    """Median training samples/s per rank of `lottery pretrain` on 2 ranks x 1 loader worker."""
    from lottery.train.metrics import read_metrics

    overrides = [
        f"run_dir={run_dir}",
        *world.overrides(data_dir),
        f"model.dir={model_dir}",
        "data.num_workers=1",
        f"train.batch_size={BATCH}",
        "train.zero_stage=0",
        f"train.steps={steps}",
        "train.log_every=1",
        f"train.val_every={steps}",
        "train.val_at_start=false",
        "train.val_batches=1",
        f"train.ckpt_every={steps}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # each rank takes its share
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = ["deepspeed", "--num_gpus", str(RANKS), "--master_port", str(_free_port()), "--module", "lottery"]
    cmd += ["pretrain", "--config", "pretrain-uniter-mini", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"lottery pretrain failed:\n{proc.stderr[-3000:]}")
    rates = [r["samples_per_s"] for r in read_metrics(run_dir / "metrics.jsonl") if "samples_per_s" in r]
    return statistics.median(rates[len(rates) // 4 :]) / RANKS


def _free_port() -> int:
    from lottery.dist import free_port

    return free_port()


def loader_rate(data_dir: Path, model_dir: Path, batches: int) -> float:
    """Samples/s of rank 0's training stream (1 worker) with each batch collated, in this process."""
    from lottery.data.pipeline import example_stream, shard_urls
    from lottery.models.families import FAMILIES
    from lottery.models.uniter.checkpoint import load_tokenizer
    from lottery.tasks.masking import TextVocab
    from lottery.tasks.mixer import TaskMixer
    from lottery.tasks.pretrain import CollateContext

    torch.set_num_threads(1)
    ctx = CollateContext(TextVocab.from_tokenizer(load_tokenizer(model_dir)))
    tasks = FAMILIES["uniter"].tasks()
    mixer = TaskMixer(MIX, 0, set(tasks))
    stream = iter(
        example_stream(
            shard_urls(data_dir, "train"),
            rank=0,
            world_size=RANKS,
            tokenizer_dir=model_dir,
            batch_size=BATCH,
            num_workers=1,
        )
    )
    warm_up = 3  # the worker's start and its tokenizer load, which training pays once too
    for step in range(warm_up):
        tasks[mixer.task_for(step)].collate(next(stream), ctx, torch.Generator().manual_seed(step))
    start = time.perf_counter()
    for step in range(warm_up, warm_up + batches):
        tasks[mixer.task_for(step)].collate(next(stream), ctx, torch.Generator().manual_seed(step))
    return batches * BATCH / (time.perf_counter() - start)


def measure(world: World, steps: int, batches: int) -> list[Row]:
    """Figure 5's row."""
    tmp = Path(tempfile.mkdtemp(prefix="loader-bench-"))
    try:
        data_dir, model_dir = tmp / "shapes", tmp / "uniter-mini"
        _lottery(*world.build_args(data_dir))
        _lottery("model", "init", "--from-bert", "minilm", "--out", str(model_dir), "--data", str(data_dir))
        loader = loader_rate(data_dir, model_dir, batches)
        train = training_rate(world, data_dir, model_dir, tmp / "run", steps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [
        Row(
            figure=f"5. loader samples/s / training samples/s, uniter-mini, {RANKS} ranks x 1 worker",
            measured=loader / train,
            target=">= 3",
            unit="x",
            note=f"loader alone {loader:.0f}/s (1 worker), training {train:.1f}/s a rank, batch {BATCH}",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_flags(parser)
    args = parser.parse_args()
    if args.quick:
        rows = measure(World(train=1024, val=64, per_shard=128), steps=12, batches=24)
    else:
        rows = measure(World(train=4096, val=64, per_shard=256), steps=40, batches=96)
    emit(rows, args.json)


if __name__ == "__main__":
    main()
