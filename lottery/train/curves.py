"""Learning curves of a run as one PNG: training loss per task and the validation metrics, per step."""

from __future__ import annotations

from pathlib import Path

from lottery.files import open_atomic
from lottery.train.metrics import read_metrics


def plot_learning_curves(metrics_path: Path, out: Path, title: str = "") -> Path:
    """Write `out` (PNG) from a run's metrics.jsonl; atomically (temp file, then rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train: dict[str, list[tuple[int, float]]] = {}
    val: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if "val" in record:
            for key, value in record["val"].items():
                val.setdefault(key, []).append((record["step"], value))
        else:
            for task, loss in record.get("losses", {}).items():
                train.setdefault(task, []).append((record["step"], loss))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for task, points in sorted(train.items()):
        left.plot(*zip(*points, strict=True), label=f"{task} loss", alpha=0.8)
    left.set_xlabel("step")
    left.set_ylabel("training loss (logged steps)")
    left.set_yscale("log")
    left.legend()
    for key, points in sorted(val.items()):
        if key.endswith("_acc") or key.startswith("wra_"):
            right.plot(*zip(*points, strict=True), marker="o", label=key)
    right.axhline(0.5, color="gray", linestyle=":", label="ITM chance")
    right.set_xlabel("step")
    right.set_ylabel("validation")
    right.legend()
    figure.suptitle(title or str(metrics_path.parent))
    figure.tight_layout()
    with open_atomic(out) as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)
    return out
