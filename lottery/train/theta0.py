"""theta0: the pre-trained model every ticket is cut from and rewound to, built once and reused.

A theta0 lives in a cache directory keyed by the digest of the pre-training config that makes it
(`~/.cache/vl-lottery/theta0/<digest>/` unless `theta0_cache` or `$LOTTERY_THETA0_CACHE` says
otherwise): the pre-training run itself (checkpoints, metrics.jsonl, model/), then its criteria
(`criteria.json`), its learning curves (`curves.png`) and, written last, `DONE`. Without `DONE` a
theta0 is unfinished: the next job resumes the run from its latest checkpoint, and never uses it as is.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from lottery import dist
from lottery.config import PretrainConfig, SparsityConfig, digest
from lottery.files import write_json_atomic

CACHE_ENV = "LOTTERY_THETA0_CACHE"
DONE = "DONE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vl-lottery" / "theta0")


def identity(config: PretrainConfig) -> PretrainConfig:
    """The config with what does not change the weights cleared: where it runs, how often it logs."""
    return replace(
        config,
        run_dir="",
        train=replace(config.train, stop_after_steps=0, log_every=1, ckpt_every=1, val_every=1),
        sparsity=SparsityConfig(),
    )


def theta0_dir(config: PretrainConfig, root: Path | None = None) -> Path:
    return (root or cache_root()) / digest(identity(config))[:16]


def is_done(directory: Path) -> bool:
    return (directory / DONE).is_file() and (directory / "model" / "config.json").is_file()


def ensure_theta0(config: PretrainConfig, root: Path | None = None, samples: int = 512) -> Path | None:
    """The theta0 model directory for `config`, pre-training it first when not built yet (collective).

    Prints its criteria table either way, so every job shows whether its theta0 has learned. Returns
    None when the build stopped early (`train.stop_after_steps`): the next call resumes it.
    """
    from lottery.train.grounding import Criterion, evaluate_model_dir, format_criteria
    from lottery.train.pretrain import pretrain

    if config.sparsity.ticket:
        raise ValueError("theta0 is the dense pre-trained model: run it without sparsity.ticket")
    directory = theta0_dir(config, root)
    if not is_done(directory):
        if dist.is_main():
            print(f"theta0: building {directory} (resumes if a previous build was stopped)", flush=True)
        pretrain(replace(config, run_dir=str(directory)), keep_process_group=True)
        dist.barrier()  # rank 0 writes the model after training; every rank must see the same state
        if not (directory / "model" / "config.json").is_file():
            return None
        if dist.is_main():
            metrics, rows = evaluate_model_dir(directory / "model", config.data.dir, samples=samples)
            write_json_atomic(
                directory / "criteria.json", {"metrics": metrics, "criteria": [asdict(r) for r in rows]}
            )
            from lottery.train.curves import plot_learning_curves

            plot_learning_curves(
                directory / "metrics.jsonl", directory / "curves.png", f"theta0 {directory.name}"
            )
            (directory / DONE).write_text(digest(identity(config)) + "\n")
        dist.barrier()
    if dist.is_main():
        stored = json.loads((directory / "criteria.json").read_text())
        rows = [Criterion(**row) for row in stored["criteria"]]
        print(f"theta0 {directory}:\n{format_criteria(rows)}", flush=True)
    return directory / "model"


def seed_summary(directories: list[Path]) -> str:
    """Mean and spread (min..max) of each criterion over theta0 builds that differ only in seed."""
    import statistics

    tables = [json.loads((d / "criteria.json").read_text())["criteria"] for d in directories]
    lines = [f"{'criterion':<24} {'mean':>8} {'min..max':>17} {'baseline mean':>14}  passed"]
    for rows in zip(*tables, strict=True):
        values = [r["value"] for r in rows]
        baselines = [r["baseline"] for r in rows]
        passed = sum(r["passed"] for r in rows)
        lines.append(
            f"{rows[0]['name']:<24} {statistics.mean(values):8.4f} {min(values):8.4f}..{max(values):<8.4f}"
            f" {statistics.mean(baselines):14.4f}  {passed}/{len(rows)}"
        )
    return "\n".join(lines)
