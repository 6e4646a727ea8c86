"""Training curves in TensorBoard, Weights & Biases or CSV files, through DeepSpeed's own monitor.

``train.report_to=tensorboard|wandb|csv`` adds that monitor's section to the run's DeepSpeed config, so
DeepSpeed writes what it writes itself (learning rate, loss scale, timings) and `Tracker` adds ours
through the same writer: every logged training step (loss, per-task losses, throughput) and every
validation, for pre-training, theta0, each IMP round and each fine-tune. Files go under the run
directory (``<run>/tensorboard/``, ``<run>/csv/``); W&B takes its project and mode from the
environment as usual (``WANDB_PROJECT``, ``WANDB_MODE=offline``). A monitor section a user's own
DeepSpeed JSON enables is honoured the same way (`Tracker` writes to it); enabling one there and
another with ``report_to`` is refused, naming both. Rank 0 writes, as DeepSpeed's monitor does.

``metrics.jsonl`` / ``metrics.json`` stay the record of a run; a tracker is a view of it. A resumed run
writes the steps after its checkpoint again, which TensorBoard shows as a second point at that step.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lottery.config import REPORT_TO, ConfigError  # noqa: F401 (REPORT_TO: the choices, checked on reading)

# report_to -> (DeepSpeed config section, the package its writer imports)
MONITORS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "csv": ("csv_monitor", None),
}
DEEPSPEED_MONITORS = ("tensorboard", "wandb", "csv_monitor", "comet")
WANDB_PROJECT = "vl-lottery"


class TrackerError(ConfigError):
    """A tracker that cannot run here (its package is missing) or that conflicts with the DeepSpeed JSON."""


def check_tracker(report_to: str) -> None:
    """Before any engine: the tracker's package is installed (a `TrackerError` says what to install)."""
    if report_to == "none":
        return
    package = MONITORS[report_to][1]
    if package is not None and importlib.util.find_spec(package) is None:
        raise TrackerError(
            f"train.report_to={report_to}: the {package!r} package is not installed; `pip install {package}`, "
            "or pick csv (no package needed) or none"
        )


def monitor_sections(report_to: str, run_dir: Path, ds: Mapping[str, Any], source: object) -> dict[str, Any]:
    """The DeepSpeed config sections that turn the tracker on ({} for none), refusing a different
    monitor the JSON at `source` already enables."""
    if report_to == "none":
        return {}
    section = MONITORS[report_to][0]
    enabled = [
        name for name in DEEPSPEED_MONITORS if isinstance(ds.get(name), dict) and ds[name].get("enabled")
    ]
    others = [name for name in enabled if name != section]
    if others:
        raise TrackerError(
            f"train.report_to={report_to} but {source} enables the {others[0]} monitor; use one of the two"
        )
    job = run_dir.name or "run"
    if section == "wandb":
        settings = {
            "project": os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
            "group": run_dir.parent.name or job,
        }
    else:
        settings = {"output_path": str(run_dir / report_to), "job_name": job}
    return {section: {**ds.get(section, {}), "enabled": True, **settings}}


def flat_scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """`record`'s numbers under slash-joined names (``{"losses": {"mlm": 2.1}}`` -> ``losses/mlm``)."""
    found: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(flat_scalars(value, f"{name}/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            found[name] = float(value)
    return found


class Tracker:
    """Our curves through the engine's monitor; a no-op when no monitor is on."""

    def __init__(self, engine: Any) -> None:
        self.monitor = getattr(engine, "monitor", None)
        self.enabled = bool(getattr(self.monitor, "enabled", False))

    def log(self, record: Mapping[str, Any], group: str) -> None:
        """Every number of `record` but its ``step``, at that step, under `group` ("train", "val")."""
        if not self.enabled:
            return
        step = int(record["step"])
        values = {k: v for k, v in flat_scalars(record).items() if k != "step"}
        self.monitor.write_events(
            [(f"{group}/{name}", value, step) for name, value in sorted(values.items())]
        )
