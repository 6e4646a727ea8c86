"""The local SLURM cluster really schedules, launches through srun, spans two (emulated) nodes, and
requeues fast: the properties the project's SLURM recipes (slurm/pretrain.sbatch, requeue on preemption)
rely on. Each test fails on a cluster that only pretends.

The one-node tests run first, then the two-node ones, so the session switches modes once.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

RANKS = 'echo "rank $SLURM_PROCID $SLURM_NTASKS $SLURM_LOCALID $SLURMD_NODENAME"'


def _lines(path: Path, prefix: str) -> list[str]:
    return sorted(line for line in path.read_text().splitlines() if line.startswith(prefix))


def test_one_node_batch_job_srun_starts_both_ranks(slurm_cluster, tmp_path):
    cluster = slurm_cluster(nodes=1)
    out = tmp_path / "ranks.out"
    script = f"#!/bin/bash\nset -euo pipefail\nsrun --ntasks=2 bash -c {shlex.quote(RANKS)}\n"
    job = cluster.submit(script, "--ntasks=2", f"--output={out}")
    assert cluster.wait(job, timeout=60) == "COMPLETED", out.read_text()
    assert _lines(out, "rank ") == ["rank 0 2 0 n1", "rank 1 2 1 n1"]


def test_one_node_srun_helper(slurm_cluster):
    cluster = slurm_cluster(nodes=1)
    result = cluster.run(["bash", "-c", RANKS], "--nodes=1", "--ntasks=2")
    assert sorted(result.stdout.splitlines()) == ["rank 0 2 0 n1", "rank 1 2 1 n1"]


# Each rank adds rank+1 across the job with a real gloo all_reduce, so the sum is world*(world+1)/2 only
# if every task joined the same process group.
ALL_REDUCE = """
import datetime, os, socket
import torch, torch.distributed as dist
rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
dist.init_process_group(
    "gloo", init_method="env://", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=90)
)
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
assert value.item() == world * (world + 1) / 2, value
master = os.environ["MASTER_ADDR"]
print(
    f"allreduce rank={rank} world={world} node={os.environ['SLURMD_NODENAME']} sum={value.item():g}"
    f" master={master}={socket.gethostbyname(master)}",
    flush=True,
)
dist.destroy_process_group()
"""


def test_two_nodes_gloo_all_reduce_across_nodes(slurm_cluster, tmp_path):
    cluster = slurm_cluster(nodes=2)
    out = tmp_path / "allreduce.out"
    # MASTER_ADDR the way slurm/pretrain.sbatch gets it: the first host of the allocation (n1, which
    # cluster-up makes resolve to 127.0.0.1), so the test exercises the production recipe rather than a
    # hard-coded 127.0.0.1; MASTER_PORT from the job id, also as there.
    script = f"""#!/bin/bash
set -euo pipefail
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
export OMP_NUM_THREADS=1
srun --kill-on-bad-exit=1 {shlex.quote(sys.executable)} -c {shlex.quote(ALL_REDUCE)}
"""
    job = cluster.submit(script, "--nodes=2", "--ntasks-per-node=1", f"--output={out}")
    assert cluster.wait(job, timeout=150) == "COMPLETED", out.read_text()
    lines = _lines(out, "allreduce ")
    assert len(lines) == 2, out.read_text()
    fields = [dict(item.split("=", 1) for item in line.split()[1:5]) for line in lines]
    assert [f["rank"] for f in fields] == ["0", "1"]
    assert {f["node"] for f in fields} == {"n1", "n2"}, "the two tasks must run on different nodes"
    assert {f["sum"] for f in fields} == {"3"}


def test_two_nodes_still_fit_one_node_two_tasks(slurm_cluster):
    cluster = slurm_cluster(nodes=2)
    result = cluster.run(["bash", "-c", RANKS], "--nodes=1", "--ntasks=2")
    nodes = {line.split()[-1] for line in result.stdout.splitlines()}
    assert len(result.stdout.splitlines()) == 2 and len(nodes) == 1, result.stdout


def test_requeue_from_usr1_trap_round_trip_is_seconds(slurm_cluster, tmp_path, capsys):
    cluster = slurm_cluster(nodes=2)
    out, ready = tmp_path / "requeue.out", tmp_path / "ready"
    # The pattern a training job uses: on USR1 (sent by --signal before the time limit, or at preemption)
    # save, requeue itself and leave; the requeued run resumes. `sleep & wait` keeps the trap responsive.
    script = f"""#!/bin/bash
set -uo pipefail
echo "start restart=${{SLURM_RESTART_COUNT:-0}} t=$(date +%s.%N)"
if [ "${{SLURM_RESTART_COUNT:-0}}" -ge 1 ]; then echo "finished restart=$SLURM_RESTART_COUNT"; exit 0; fi
trap 'echo "usr1 t=$(date +%s.%N)"; scontrol requeue "$SLURM_JOB_ID"; echo "requeue rc=$?"; exit 0' USR1
touch {shlex.quote(str(ready))}
while true; do sleep 1 & wait $!; done
"""
    job = cluster.submit(
        script, "--requeue", "--open-mode=append", "--signal=B:USR1@60", "--time=5", f"--output={out}"
    )
    cluster.wait(job, timeout=30, states={"RUNNING"})
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, f"batch script never got going: {cluster.job(job)}"
        time.sleep(0.1)

    sent = time.time()
    cluster.command(["scancel", "--batch", "--signal=USR1", str(job)])
    assert cluster.wait(job, timeout=60) == "COMPLETED", out.read_text()
    observed = time.time() - sent

    log = out.read_text()
    starts = [line for line in log.splitlines() if line.startswith("start ")]
    assert [line.split()[1] for line in starts] == ["restart=0", "restart=1"], log
    assert "requeue rc=0" in log and "finished restart=1" in log, log
    assert cluster.job(job)["Restarts"] == "1"
    # both timestamps come from this machine's clock: the batch script's `date` and the test's time()
    round_trip = float(starts[1].split(" t=")[1]) - sent
    with capsys.disabled():
        print(
            f"\nrequeue round trip: USR1 sent -> requeued run started {round_trip:.1f} s,"
            f" -> job COMPLETED seen {observed:.1f} s"
        )
    # cred_expire=5 plus a 1 s scheduling pass; Slurm's default cred_expire would make this over 120 s
    assert round_trip < 30, f"requeue took {round_trip:.1f} s: is AuthInfo cred_expire short?"
