"""The per-round table of an IMP run: sparsity and validation of each round, beside theta0 and chance.

Built from what the rounds leave on disk (``rounds/round_NN/metrics.jsonl`` and ``round.json``, and
the masks in ``masks/``), so it can be rebuilt for any run directory, also one copied off a cluster,
and written as ``rounds.json``.

Each round also shows its mask's most pruned tensor and the tensors it wipes out (pruned >= 99%,
`lottery.sparsity.health`): global magnitude pruning takes a tensor on a smaller scale first (the
untrained pooler went 99.46% and 99.96% at 60% and 70% overall), and the overall sparsity hides it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lottery.files import write_json_atomic
from lottery.imp.state import round_alias
from lottery.sparsity import health
from lottery.tickets import TicketError, TicketStore

COLUMNS = ("itm_acc", "mlm_acc", "mrfr_loss", "mrckl_loss", "wra_pos", "wra_neg")


def _last_val(metrics: Path) -> dict[str, float]:
    last: dict[str, float] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            record = json.loads(line)
            if "val" in record:
                last = {**record["val"], "step": record["step"]}
    return last


def _task_val(metrics: Path) -> dict[str, float]:
    """A downstream round's task metrics (its fine-tune's metrics.json), at its last step."""
    if not metrics.is_file():
        return {}
    record = json.loads(metrics.read_text())
    return {**record["metrics"], "step": record["steps"]}


def mask_health(run_dir: Path, index: int) -> dict:
    """The per-tensor digest of the mask round `index` trained under (`health.summary`).

    Round 0 is dense; round r >= 1 trained under the run store's ``round_NN``. A mask that cannot be
    read gives ``{"mask_problem": ...}`` (the message names the file and the check that failed)
    instead of failing the table.
    """
    if index == 0:
        return {"max_tensor": None, "max_tensor_sparsity": 0.0, "wiped_out": {}}
    try:
        masks = TicketStore(Path(run_dir) / "masks").load(round_alias(index)).masks
    except (TicketError, OSError) as err:
        return {"mask_problem": " ".join(str(err).split())}
    return health.summary(masks)


def round_rows(run_dir: Path) -> list[dict]:
    """One row per finished round (those with a round.json), in round order, with its mask's health."""
    rows = []
    for round_json in sorted(Path(run_dir).glob("rounds/round_*/round.json")):
        record = json.loads(round_json.read_text())
        val = _last_val(round_json.parent / "metrics.jsonl") or _task_val(round_json.parent / "metrics.json")
        row = {**record, "steps": val.pop("step", None), "val": val}
        rows.append({**row, **mask_health(run_dir, int(record["round"]))})
    return rows


def reference_rows(theta0_dir: Path) -> list[dict]:
    """theta0 itself (its last validation) and chance / trivial baselines from its criteria."""
    rows = []
    val = _last_val(theta0_dir / "metrics.jsonl")
    if val:
        val.pop("step", None)
        rows.append({"label": "theta0", "val": val})
    criteria = theta0_dir / "criteria.json"
    if criteria.is_file():
        by_name = {c["name"]: c["baseline"] for c in json.loads(criteria.read_text())["criteria"]}
        chance = {"itm_acc": 0.5, "mlm_acc": 0.0}
        if "MRFR loss" in by_name:
            chance["mrfr_loss"] = by_name["MRFR loss"]
        if "MRC-kl loss" in by_name:
            chance["mrckl_loss"] = by_name["MRC-kl loss"]
        rows.append({"label": "chance / mean", "val": chance})
    return rows


def task_reference_rows(run_dir: Path) -> list[dict]:
    """A downstream run's chance row: the prior / uniform predictor its round-0 fine-tune measured."""
    metrics = Path(run_dir) / "rounds" / "round_00" / "metrics.json"
    if not metrics.is_file():
        return []
    chance = json.loads(metrics.read_text()).get("chance")
    return [{"label": "chance", "val": chance}] if chance else []


def theta0_record(theta0_dir: Path) -> dict:
    """``theta0_dir`` / ``theta0_passed`` / ``theta0_failed``, the keys a fine-tune's metrics use, so a
    reader of either sees whether the tickets stand on a theta0 that learned (passed None: no verdict,
    e.g. a table rebuilt where theta0's directory is not at hand)."""
    from lottery.train.theta0 import read_verdict

    try:
        verdict = read_verdict(theta0_dir)
    except (OSError, ValueError):
        return {"theta0_dir": str(theta0_dir), "theta0_passed": None, "theta0_failed": []}
    return {
        "theta0_dir": verdict.directory,
        "theta0_passed": verdict.passed,
        "theta0_failed": list(verdict.failed),
    }


def write_rounds(run_dir: Path, theta0_dir: Path, objective: str = "pretrain") -> dict:
    reference = reference_rows(theta0_dir) if objective == "pretrain" else task_reference_rows(run_dir)
    table = {"rounds": round_rows(run_dir), "reference": reference, **theta0_record(theta0_dir)}
    write_json_atomic(Path(run_dir) / "rounds.json", table)
    return table


def columns(table: dict) -> tuple[str, ...]:
    """The pre-training columns, or a downstream run's task metrics (as its rounds recorded them)."""
    seen = [key for row in table["rounds"] for key in row["val"]]
    if not seen or any(key in COLUMNS for key in seen):
        return COLUMNS
    return tuple(dict.fromkeys(seen))


def format_rounds(table: dict) -> str:
    names = columns(table)
    header = f"{'round':<14}{'sparsity':>9}{'steps':>7}" + "".join(f"{c:>12}" for c in names)
    header += f"{'to next':>9}{'early bird':>12}{'max tensor':>12}{'wiped':>7}"
    lines = [header]
    for row in table["reference"]:
        cells = "".join(_cell(row["val"].get(c)) for c in names)
        lines.append(f"{row['label']:<14}{'-':>9}{'':>7}{cells}")
    for row in table["rounds"]:
        cells = "".join(_cell(row["val"].get(c)) for c in names)
        to_next = row.get("hamming_to_next")
        draws = row.get("early_bird") or []
        bird = f"{draws[-1]['distance_to_final']:.4f}@{draws[-1]['step']}" if draws else "-"
        lines.append(
            f"{'round ' + str(row['round']):<14}{row['sparsity']:>9.2%}{row['steps'] or '-':>7}{cells}"
            f"{'-' if to_next is None else f'{to_next:.4f}':>9}{bird:>12}{_health_cells(row)}"
        )
    return "\n".join(lines)


def _health_cells(row: dict) -> str:
    """'max tensor' and 'wiped' of a round: '?' for a mask that could not be read, '-' for a table
    written before they were recorded."""
    if "mask_problem" in row:
        return f"{'?':>12}{'?':>7}"
    most, wiped = row.get("max_tensor_sparsity"), row.get("wiped_out")
    cell = "-" if most is None else f"{most:.2%}"
    count = "-" if wiped is None else (f"{len(wiped)} !!" if wiped else "0")
    return f"{cell:>12}{count:>7}"


def mask_warnings(table: dict) -> list[str]:
    """One line per round whose mask wipes out a tensor (naming each and its sparsity), and one per
    round whose mask could not be read."""
    lines = []
    for row in table["rounds"]:
        if row.get("mask_problem"):
            lines.append(f"WARNING: round {row['round']}'s mask was not checked: {row['mask_problem']}")
        elif row.get("wiped_out"):
            lines.append(health.warning_text(row["wiped_out"], f"round {row['round']}'s mask"))
    return lines


def _cell(value: float | None) -> str:
    return f"{'-':>12}" if value is None else f"{value:>12.4f}"


def early_bird_saving(table: dict, steps_per_round: int) -> tuple[int, int]:
    """(steps saved by early-bird stops, steps of the rounds at full length)."""
    rounds = table["rounds"]
    done = sum(min(row["steps"] or steps_per_round, steps_per_round) for row in rounds)
    return steps_per_round * len(rounds) - done, steps_per_round * len(rounds)


def print_rounds(table: dict, run_dir: Path, steps_per_round: int) -> None:
    print(
        f"IMP run {run_dir}: validation per round ('to next': Hamming distance to the next mask; "
        f"'max tensor': sparsity of the mask's most pruned tensor; 'wiped': tensors pruned >= "
        f"{health.WIPED_OUT:.0%})"
    )
    print(format_rounds(table))
    for line in mask_warnings(table):
        print(line)
    if table.get("theta0_passed") is False:
        print(
            f"WARNING: these rounds start from theta0 {table['theta0_dir']}, which FAILED its criteria "
            f"({', '.join(table['theta0_failed'])}): its tickets come from a model that did not learn them all"
        )
    sys.stdout.flush()
    saved, full = early_bird_saving(table, steps_per_round)
    if saved:
        print(f"early bird: the rounds ended after {full - saved} of {full} steps ({saved / full:.0%} saved)")


def report(run_dir: Path, theta0_dir: Path, objective: str, steps_per_round: int) -> dict:
    """Write rounds.json and print the table (rank 0, at the end of `lottery imp`)."""
    table = write_rounds(run_dir, theta0_dir, objective)
    print_rounds(table, run_dir, steps_per_round)
    return table
