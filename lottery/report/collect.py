"""Fine-tune results as flat rows: one per metrics.json found under the given run directories."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lottery.config import PRETRAIN_TASKS  # every family's pre-training tasks

# the one number a task is judged by (the benchmark's headline metric)
PRIMARY = {
    "vqa": "vqa_score",
    "gqa": "accuracy",
    "vcr": "q->ar",
    "snli-ve": "accuracy",
    "refcoco+": "accuracy",
    "retrieval": "mean_recall",
    "nlvr2": "accuracy",
}


@dataclass(frozen=True)
class Result:
    task: str
    score: float  # the primary metric
    ticket: str
    source: str  # what the ticket was found on: "pretrain", a task name, or "-" (dense)
    method: str  # imp / oneshot / random / magnitude ... ; "dense" without a ticket
    sparsity: float
    init: str
    adversarial: bool
    path: str
    chance: float | None = None  # the primary metric of the prior / random predictor on the same val set
    ticket_id: str = ""  # the ticket's full id ("" dense)
    store: str = ""  # the ticket store the fine-tune read it from, as its config named it ("" = default)
    # whether the run's theta0 passed its criteria; None: recorded before fine-tunes recorded it
    theta0_passed: bool | None = None
    theta0_failed: str = ""  # the criteria it failed, "; "-joined
    theta0_dir: str = ""
    seed: int = 0  # the fine-tune's train.seed (its head and data order): the unit of "std over seeds"
    family: str = "uniter"  # the model family (runs recorded before families existed are UNITER's)

    @property
    def variant(self) -> str:
        """How the row was made, beyond its sparsity: the line it belongs to in a figure."""
        name = self.method if self.init == "theta0" else f"{self.method} on {self.init}"
        return name + (" +adv" if self.adversarial else "")


def _source(tasks: list[str]) -> str:
    if not tasks:
        return "-"
    if set(tasks) <= set(PRETRAIN_TASKS):
        return "pretrain"
    return "+".join(tasks)


def _chance(record: dict) -> float | None:
    chance = record.get("chance")  # absent in runs made before it was recorded
    return None if chance is None else float(chance[PRIMARY[record["task"]]])


def _theta0(record: dict) -> dict:
    passed = record.get("theta0_passed")
    return {
        "theta0_passed": None if passed is None else bool(passed),
        "theta0_failed": "; ".join(record.get("theta0_failed") or ()),
        "theta0_dir": str(record.get("theta0_dir", "")),
    }


def _seed(record: dict) -> int:
    train = (record.get("config") or {}).get("train") or {}
    return int(train.get("seed", 0))


def collect(run_dirs: list[Path]) -> list[Result]:
    """Every metrics.json under `run_dirs` (a run directory or a directory of them); a bad file is named."""
    found = []
    for root in run_dirs:
        paths = (
            [root / "metrics.json"]
            if (root / "metrics.json").is_file()
            else sorted(root.rglob("metrics.json"))
        )
        for path in paths:
            try:
                record = json.loads(path.read_text())
                meta = record.get("ticket_meta") or {}
                found.append(
                    Result(
                        task=record["task"],
                        score=float(record["metrics"][PRIMARY[record["task"]]]),
                        ticket=record["ticket"],
                        source=_source(meta.get("tasks", [])),
                        method=meta.get("method", "dense"),
                        sparsity=float(record["sparsity"]),
                        init=record["init"],
                        adversarial=bool(record.get("adversarial", False)),
                        path=str(path.parent),
                        chance=_chance(record),
                        ticket_id=str(meta.get("id", "")),
                        store=str((record.get("config") or {}).get("store", "")) if meta else "",
                        seed=_seed(record),
                        family=str(record.get("family", "uniter")),
                        **_theta0(record),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: not a fine-tune metrics.json ({err})") from None
    return found


def by_family(results: list[Result]) -> dict[str, list[Result]]:
    """The results of each model family, in the order the families first appear: a ticket's "% of
    dense" only means something against the dense model of its own family."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.family, []).append(r)
    return groups


def dense_scores(results: list[Result]) -> dict[str, float]:
    """Each task's dense score from theta0 (the 100% of "% of dense"), the mean if several runs
    (of one family: `by_family` first when the results mix them)."""
    by_task: dict[str, list[float]] = {}
    for r in results:
        if r.method == "dense" and r.init == "theta0" and not r.adversarial:
            by_task.setdefault(r.task, []).append(r.score)
    return {task: sum(v) / len(v) for task, v in by_task.items()}
