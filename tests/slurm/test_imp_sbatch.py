"""slurm/imp.sbatch on the real dev cluster: IMP over two (emulated) nodes, one gloo rank each.

The chain's IMP job (slurm/universal.sh, conftest's `universal_chain`), never signalled, publishes a
ticket; the same job submitted alone and signalled mid-round the way SLURM warns of a
preemption (`scancel --batch --signal=USR1`, which reaches only the batch script) checkpoints, requeues
itself, resumes and publishes the same ticket id; signalled again with one of its nodes gone, the
requeued job comes back on the one node left and still finishes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from lottery.tickets import TicketStore

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
IMP_SBATCH = REPO / "slurm" / "imp.sbatch"
ALIAS = "slurm/s30"  # what the `imp_config` fixture publishes
# the script asks for 8 GPUs and 8 CPUs per task; the dev nodes have 2 CPUs and no GPU
CPU_NODE = ["--gpus-per-node=0", "--cpus-per-task=1", "--ntasks-per-node=1", "--time=20"]


def _submit(cluster, root: Path, config: Path, theta0: Path) -> tuple[int, Path]:
    log = root / "imp.out"
    env = {
        "LOTTERY": str(Path(sys.executable).with_name("lottery")),
        "CONFIG": str(config),
        "RUNS_DIR": str(root / "runs"),
        "LOTTERY_THETA0_CACHE": str(theta0),
        "LOTTERY_TICKET_STORE": str(root / "tickets"),
        "OMP_NUM_THREADS": "1",
    }
    job = cluster.submit(IMP_SBATCH, "--nodes=2", *CPU_NODE, f"--output={log}", env=env, cwd=root)
    return job, log


def _published(root: Path) -> str:
    return TicketStore(root / "tickets").resolve(ALIAS)


def _wait_for_line(log: Path, text: str, cluster, job: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and text in log.read_text()):
        assert cluster.state(job) not in ("COMPLETED", "FAILED", "CANCELLED"), log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} after {timeout} s:\n{log.read_text()}"
        time.sleep(0.2)


def _signal_in_round_1(cluster, job: int, log: Path) -> None:
    """USR1 to the batch script once round 1 (the 30% round) has begun: it stops inside that round."""
    _wait_for_line(log, "IMP round 1 of 1", cluster, job)
    cluster.command(["scancel", "--batch", "--signal=USR1", str(job)])


@pytest.fixture(scope="module")
def uninterrupted(universal_chain) -> str:
    """The ticket id that the chain's IMP job, never signalled, on two nodes, published."""
    (log,) = universal_chain.root.glob(f"imp-{universal_chain.jobs['imp']}.out")
    text = log.read_text()
    assert "imp.sbatch: job" in text and "restart 0, 2 node(s) n[1-2]" in text, text
    assert "2 rank(s) via srun" in text, text
    assert "imp.sbatch: lottery imp exited 0" in text, text
    return TicketStore(universal_chain.root / "tickets").resolve(ALIAS)


def test_imp_sbatch_on_two_nodes_publishes_a_ticket(uninterrupted):
    assert len(uninterrupted) == 64


def test_a_signalled_imp_job_checkpoints_requeues_and_publishes_the_same_ticket(
    slurm_cluster, tmp_path, imp_config, slurm_theta0_cache, uninterrupted
):
    cluster = slurm_cluster(nodes=2)
    job, log = _submit(cluster, tmp_path, imp_config, slurm_theta0_cache)
    _signal_in_round_1(cluster, job, log)
    assert cluster.wait(job, timeout=900) == "COMPLETED", log.read_text()
    text = log.read_text()
    assert "imp.sbatch: SIGUSR1" in text and "requeueing job" in text, text
    assert "restart 1, 2 node(s)" in text, f"the job did not come back after its requeue:\n{text}"
    assert "resumed from the checkpoint" in text, text
    assert cluster.job(job)["Restarts"] == "1"
    assert _published(tmp_path) == uninterrupted, "the requeued run published another ticket"


def test_a_requeued_imp_job_finishes_when_it_comes_back_on_one_node(
    slurm_cluster, tmp_path, imp_config, slurm_theta0_cache, uninterrupted
):
    cluster = slurm_cluster(nodes=2)
    job, log = _submit(cluster, tmp_path, imp_config, slurm_theta0_cache)
    _wait_for_line(log, "IMP round 1 of 1", cluster, job)
    # n2 leaves the cluster; the requeued job waits for two nodes until it is shrunk to the one left
    cluster.scontrol("update", "NodeName=n2", "State=DRAIN", "Reason=imp-sbatch-test")
    try:
        cluster.command(["scancel", "--batch", "--signal=USR1", str(job)])
        _wait_for_line(log, "requeueing job", cluster, job)
        cluster.wait(job, timeout=60, states={"PENDING"})
        cluster.scontrol("update", f"JobId={job}", "NumNodes=1", "NumTasks=1")
        assert cluster.wait(job, timeout=900) == "COMPLETED", log.read_text()
    finally:
        cluster.scontrol("update", "NodeName=n2", "State=RESUME", check=False)
    text = log.read_text()
    assert "restart 1, 1 node(s) n1" in text, text
    assert "was begun on 2 rank(s), this job has 1" in text, text
    assert len(_published(tmp_path)) == 64
