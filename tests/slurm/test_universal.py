"""slurm/universal.sh and slurm/finetune.sbatch on the real dev cluster.

The chain IMP -> plan -> fine-tuning array -> report runs as separate jobs joined by afterok
dependencies and ends with a report; `--missing` then finds everything done and submits nothing. A
fine-tuning job whose alias the store lacks fails at once, naming it, and the report waiting on it
never runs.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from lottery.tickets import TicketStore

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
UNIVERSAL = REPO / "slurm" / "universal.sh"
FINETUNE_SBATCH = REPO / "slurm" / "finetune.sbatch"
REPORT_SBATCH = REPO / "slurm" / "report.sbatch"
CPU_JOB = "--gpus-per-node=0 --cpus-per-task=1 --time=20"
LOTTERY = str(Path(sys.executable).with_name("lottery"))


def test_universal_runs_the_chain_to_the_report_and_missing_then_submits_nothing(universal_chain):
    root = universal_chain.root
    assert "positions 0-1 of 2" in universal_chain.out, universal_chain.out  # vqa x {dense, s30}
    assert (root / "report" / "report.md").is_file()
    planned = (root / "plan" / "tickets.txt").read_text().split()
    assert planned == ["dense", TicketStore(root / "tickets").resolve("slurm/s30")]
    trained = sorted(json.loads(p.read_text())["ticket"] for p in (root / "finetune").glob("*/metrics.json"))
    assert trained == sorted(planned), "the array did not train the planned tickets"
    assert len(list(root.glob("finetune-*_0.out"))) == 1 and len(list(root.glob("finetune-*_1.out"))) == 1

    again = universal_chain.again("--missing")
    assert re.findall(r"^(\w+): done", again, re.M) == ["imp", "plan", "finetune", "report"], again


def test_a_finetune_job_with_a_missing_alias_fails_at_once_and_its_report_never_runs(
    slurm_cluster, tmp_path, imp_config, slurm_theta0_cache
):
    cluster = slurm_cluster(nodes=2)
    env = {
        "LOTTERY": LOTTERY,
        "TASKS": "vqa",
        "TICKETS": "slurm/no-such-ticket",
        "RUNS_DIR": str(tmp_path / "finetune"),
        "LOTTERY_THETA0_CACHE": str(slurm_theta0_cache),
        "LOTTERY_TICKET_STORE": str(tmp_path / "tickets"),
    }
    began = time.monotonic()
    log = tmp_path / "finetune.out"
    array = cluster.submit(
        FINETUNE_SBATCH,
        "--array=0-0",
        *CPU_JOB.split(),
        f"--output={log}",
        env=env,
        cwd=tmp_path,
    )
    report = cluster.submit(
        REPORT_SBATCH,
        f"--dependency=afterok:{array}",
        "--cpus-per-task=1",
        "--time=20",
        f"--output={tmp_path / 'report.out'}",
        env=env,
        cwd=tmp_path,
    )
    assert cluster.wait(array, timeout=120) == "FAILED", log.read_text()
    elapsed = time.monotonic() - began
    text = log.read_text()
    assert "no ticket 'slurm/no-such-ticket'" in text, text
    assert "theta0:" not in text, f"a model was built before the alias was checked:\n{text}"
    assert elapsed < 60, f"the job took {elapsed:.0f} s to fail"
    time.sleep(2)
    record = cluster.job(report)
    try:
        assert record["JobState"].split()[0] in ("PENDING", "CANCELLED"), record
        assert "Dependency" in record.get("Reason", "") or record["JobState"].startswith("CANCELLED"), record
        assert not (tmp_path / "report.out").exists(), "the report ran after a failed fine-tune"
    finally:
        cluster.command(["scancel", str(report)], check=False)
