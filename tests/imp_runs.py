"""How the IMP tests launch `lottery imp` and read what a run left: shared by tests/integration and
tests/faults. Rounds are 2 steps long on the small shapes world; theta0 is the session's 4-step one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from conftest import run, theta0_overrides, torchrun

from lottery.tickets import TicketStore


def shapes_overrides(shapes_dir: Path) -> list[str]:
    """The `data.*` settings the shapes world in `shapes_dir` was built with: a job asking for other
    ones is refused (ensure_data), so theta0 must ask for these."""
    built = json.loads((shapes_dir / "meta.json").read_text())["config"]
    keys = ("seed", "train_samples", "val_samples", "samples_per_shard", "feat_dim")
    keys += ("min_objects", "max_objects", "mentions_per_caption")
    return [f"data.{key}={built[key]}" for key in keys if key in built]


def write_config(
    path: Path, shapes_dir: Path, model_dir: Path, *, zero: int, steps: int = 2, **imp: object
) -> Path:
    config = {
        "runs_dir": str(path.parent / "runs"),
        "theta0_overrides": theta0_overrides(shapes_dir, model_dir) + shapes_overrides(shapes_dir),
        "optim": {"lr": 1e-4, "warmup_steps": 1},
        "train": {
            "steps": steps,
            "batch_size": 8,
            "zero_stage": zero,
            "val_every": 2,
            "val_batches": 2,
            "ckpt_every": 1,
            "log_every": 1,
        },
        "imp": {"schedule": [0.3, 0.5, 0.7], **imp},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def lighten(config: Path) -> Path:
    """Checkpoint and validate only at a round's end: for tests that never resume a round mid-way."""
    text = yaml.safe_load(config.read_text())
    text["train"].update(ckpt_every=100, val_every=100)
    config.write_text(yaml.safe_dump(text))
    return config


def launch(config: Path, cache: Path, *, ranks: int = 2, fault: str = "", check: bool = True):
    env = {"LOTTERY_THETA0_CACHE": str(cache), "LOTTERY_FAULT": fault}
    prefix = torchrun(ranks) if ranks > 1 else [sys.executable]
    cmd = [
        "env",
        *(f"{k}={v}" for k, v in env.items()),
        *prefix,
        "-m",
        "lottery",
        "imp",
        "--config",
        str(config),
    ]
    return run(cmd, timeout=900, check=check)


def run_dir(config: Path) -> Path:
    (found,) = (config.parent / "runs").iterdir()
    return found


def round_ids(directory: Path) -> dict[str, str]:
    store = TicketStore(directory / "masks")
    return {alias: store.resolve(alias) for alias in sorted(store.aliases())}


def state(directory: Path) -> dict:
    return json.loads((directory / "state.json").read_text())


def rewind_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "largest |weight - start * mask|" in line]
