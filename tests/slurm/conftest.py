"""A real, local SLURM cluster for the tests in this directory (slurm/dev/cluster-up.sh).

`slurm_cluster(nodes=1|2)` brings the cluster up in that mode (one node n1, or emulated nodes n1 and n2
on this machine) and returns a `SlurmCluster` with the environment that points sbatch/srun/scontrol at it
and helpers to submit, wait for and run jobs. The cluster lives for the whole session; asking for the
other mode restarts it (so tests of one mode are best kept together). At the end of the session the
cluster is put back as it was found: stopped if the session started it, else in its original mode.
When the cluster cannot start (not root, no apt, no Debian mirror, ...) the tests are skipped with the
one line cluster-up.sh printed.

There is no slurmdbd, so `sacct` does not work: `wait` polls `scontrol show job` (slurm.conf keeps
finished jobs for MinJobAge=3600 s) and falls back to the job completion log (jobcomp/filetxt).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_UP = REPO / "slurm" / "dev" / "cluster-up.sh"
CLUSTER_DOWN = REPO / "slurm" / "dev" / "cluster-down.sh"
# the states a job does not leave by itself (REQUEUED/PENDING after a requeue are not among them)
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REQUEUE_HOLD",
        "SPECIAL_EXIT",
    }
)
# `Key=value` pairs of a one-line `scontrol show job -o` record; keys look like JobState or Socks/Node
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w/:]*)=")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: runs jobs on the local SLURM cluster of slurm/dev (needs root)"
    )


def _dev_dir() -> Path:
    return Path(os.environ.get("SLURM_DEV_DIR", "/tmp/vl-lottery-slurm"))


def parse_record(line: str) -> dict[str, str]:
    """`JobId=1 JobName=x JobState=COMPLETED ...` -> {"JobId": "1", ...}; values may hold spaces."""
    matches = list(_FIELD.finditer(line.strip()))
    record = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(line.strip())
        record[match.group(1)] = line.strip()[match.end() : end].strip()
    return record


def _base_env() -> dict[str, str]:
    # a pytest run inside a SLURM allocation must not hand its job's variables (or another cluster's
    # SLURM_CONF) to our sbatch/srun; the SLURM_DEV_* settings of cluster-up.sh pass through
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SLURM_") or key.startswith("SLURM_DEV_")
    }


def _source_env_file(env_file: Path) -> dict[str, str]:
    """The environment after `source env_file`, read by bash itself rather than parsed here."""
    out = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "_", str(env_file)],
        env=_base_env(),
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


class SlurmCluster:
    """Handle on the running dev cluster: `env` for subprocesses, and submit/wait/run helpers."""

    def __init__(self, nodes: int, dev_dir: Path, env: dict[str, str], workdir: Path) -> None:
        self.nodes = nodes
        self.dev_dir = dev_dir
        self.env = env
        # sbatch/srun run here unless told otherwise, so default slurm-%j.out files stay out of the repo
        self.workdir = workdir
        self._scripts = 0

    def command(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60,
        check: bool = True,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster (with `env` added); a failure shows its stderr."""
        result = subprocess.run(
            list(argv),
            env={**self.env, **(env or {})},
            cwd=cwd or self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def scontrol(self, *args: str, check: bool = True) -> str:
        return self.command(["scontrol", *args], check=check).stdout

    def submit(
        self,
        script: str | Path,
        *sbatch_args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        """sbatch a script (a path to one, or its text) with extra sbatch arguments; returns the job id.

        sbatch exports the submitting environment to the job, so `env` reaches the script's variables."""
        if isinstance(script, str) and ("\n" in script or not Path(script).is_file()):
            self._scripts += 1
            path = self.workdir / f"job-{self._scripts}.sbatch"
            path.write_text(script)
            script = path
        out = self.command(["sbatch", "--parsable", *sbatch_args, str(script)], cwd=cwd, env=env).stdout
        return int(out.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str] | None:
        """The job's record from slurmctld, else its last record in the completion log, else None."""
        result = self.command(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if result.returncode == 0 and result.stdout.strip():
            return parse_record(result.stdout.splitlines()[0])
        comp_log = self.dev_dir / "log" / "jobcomp.txt"
        if comp_log.exists():
            records = [parse_record(line) for line in comp_log.read_text().splitlines()]
            mine = [record for record in records if record.get("JobId") == str(job_id)]
            if mine:
                return mine[-1]
        return None

    def state(self, job_id: int) -> str:
        record = self.job(job_id)
        # "CANCELLED by 0" -> "CANCELLED"
        return record.get("JobState", "UNKNOWN").split()[0] if record else "UNKNOWN"

    def wait(self, job_id: int, timeout: float = 60, states: frozenset[str] | set[str] = FINAL_STATES) -> str:
        """Poll until the job is in one of `states` (default: finished for good); returns that state."""
        deadline = time.monotonic() + timeout
        state = "UNKNOWN"
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if state in states:
                return state
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} still {state} after {timeout:g} s: {self.job(job_id)}")

    def run(
        self, cmd: Sequence[str], *srun_args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`srun [srun_args] cmd` (a job of its own); returns the finished process with its output."""
        return self.command(["srun", *srun_args, *cmd], timeout=timeout, check=check)


def _cluster_script(*args: str) -> tuple[int, str]:
    """Run cluster-up/down; returns its exit code and its one line (on failure, the one naming the step)."""
    result = subprocess.run(
        ["bash", *args], env=_base_env(), capture_output=True, text=True, timeout=600, check=False
    )
    stream = result.stderr if result.returncode and result.stderr.strip() else result.stdout
    lines = [line for line in stream.splitlines() if line.strip()] or [f"exit code {result.returncode}"]
    return result.returncode, lines[-1]


def _mode_now() -> int | None:
    """The mode the cluster is up in, or None when it is not up."""
    if not CLUSTER_UP.exists():
        return None
    rc, _ = _cluster_script(str(CLUSTER_UP), "--status")
    mode_file = _dev_dir() / "mode"
    if rc != 0 or not mode_file.exists():
        return None
    return int(mode_file.read_text().strip())


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SlurmCluster]]:
    """Factory: `slurm_cluster(nodes=1)` or `slurm_cluster(nodes=2)` -> a running `SlurmCluster`."""
    found = _mode_now()
    current: dict[str, SlurmCluster] = {}
    failure: list[str] = []

    def get(nodes: int = 1) -> SlurmCluster:
        if nodes not in (1, 2):
            raise ValueError(f"nodes must be 1 or 2, not {nodes}")
        if failure:
            pytest.skip(failure[0])
        if "up" in current and current["up"].nodes == nodes:
            return current["up"]
        current.pop("up", None)
        rc, line = _cluster_script(str(CLUSTER_UP), "--nodes", str(nodes))
        if rc != 0:
            failure.append(f"slurm dev cluster not available: {line}")
            pytest.skip(failure[0])
        env = {**_base_env(), **_source_env_file(_dev_dir() / "env")}
        workdir = tmp_path_factory.mktemp(f"slurm-{nodes}node")
        current["up"] = SlurmCluster(nodes, _dev_dir(), env, workdir)
        return current["up"]

    yield get

    if "up" not in current and not failure:
        return  # never asked for: nothing was changed
    if found is None:
        _cluster_script(str(CLUSTER_DOWN))
    elif "up" not in current or current["up"].nodes != found:
        _cluster_script(str(CLUSTER_UP), "--nodes", str(found))


# -- a small IMP the job scripts run (tests/slurm/test_imp_sbatch.py, test_universal.py) --------------


def _shared_conftest():
    """tests/conftest.py as a module: `import conftest` here may find this file (pytest imports both
    under that name), so it is loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tests_shared_conftest", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def job_theta0_overrides(shapes_dir: Path, model_dir: Path) -> list[str]:
    """theta0 of the jobs: the 4-step one of the other tiers, on the data settings `shapes_dir` was
    built with (a job asking for other ones is refused)."""
    theta0_overrides = _shared_conftest().theta0_overrides
    built = json.loads((shapes_dir / "meta.json").read_text())["config"]
    keys = ("seed", "train_samples", "val_samples", "samples_per_shard", "feat_dim")
    keys += ("min_objects", "max_objects", "mentions_per_caption")
    return theta0_overrides(shapes_dir, model_dir) + [f"data.{k}={built[k]}" for k in keys if k in built]


@pytest.fixture(scope="session")
def imp_config(tmp_path_factory, shapes_dir, mini_model_dir) -> Path:
    """Two rounds (dense, then 30%, published as slurm/s30) of 6 steps: long enough to be signalled in."""
    path = tmp_path_factory.mktemp("imp-config") / "imp.yaml"
    config = {
        "theta0_overrides": job_theta0_overrides(shapes_dir, mini_model_dir),
        "optim": {"lr": 1e-4, "warmup_steps": 1},
        "train": {
            "steps": 6,
            "batch_size": 8,
            "zero_stage": 2,
            "val_every": 6,
            "val_batches": 2,
            "ckpt_every": 100,
            "log_every": 1,
        },
        "imp": {"schedule": [0.3], "publish": {0.3: "slurm/s30"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def slurm_theta0_cache(tmp_path_factory) -> Path:
    """The theta0 cache every job of the session shares: the first job builds it."""
    return tmp_path_factory.mktemp("slurm-theta0")


# -- slurm/universal.sh, run once for the session ------------------------------------------------------

LOTTERY = str(Path(sys.executable).with_name("lottery"))
CPU_JOB = "--gpus-per-node=0 --cpus-per-task=1 --time=20"  # the dev nodes: 2 CPUs, no GPU
FINETUNE_STEPS = (
    "train.steps=2",
    "train.batch_size=4",
    "train.val_every=0",
    "data.train_examples=32",
    "data.train_images=0",
    "data.val_examples=8",
)


def finetune_overrides(imp_config: Path) -> list[str]:
    """The IMP's theta0 (the same overrides, so the same cached theta0) and a 2-step fine-tune, as
    space-free words: universal.sh takes FINETUNE_OVERRIDES as a word list."""
    theta0 = yaml.safe_load(imp_config.read_text())["theta0_overrides"]
    assert not any(" " in item for item in theta0), theta0
    return ["theta0_overrides=[" + ",".join(f"'{item}'" for item in theta0) + "]", *FINETUNE_STEPS]


def universal(cluster: SlurmCluster, root: Path, imp_config: Path, theta0: Path, *args: str) -> str:
    """Run slurm/universal.sh (IMP on the two nodes, one task each; vqa x {dense, slurm/s30}); its stdout."""
    env = {
        **cluster.env,
        "LOTTERY": LOTTERY,
        "IMP_CONFIG": str(imp_config),
        "RUNS_DIR_IMP": str(root / "imp"),
        "RUNS_DIR_FINETUNE": str(root / "finetune"),
        "REPORT_DIR": str(root / "report"),
        "PLAN_DIR": str(root / "plan"),
        "LOTTERY_THETA0_CACHE": str(theta0),
        "LOTTERY_TICKET_STORE": str(root / "tickets"),
        "ALIASES": "slurm/s30",
        "TASKS": "vqa",
        "OMP_NUM_THREADS": "1",
        "FINETUNE_OVERRIDES": " ".join(finetune_overrides(imp_config)),
        "IMP_SBATCH": f"--nodes=2 --ntasks-per-node=1 {CPU_JOB} --output={root}/imp-%j.out",
        "FINETUNE_SBATCH": f"{CPU_JOB} --output={root}/finetune-%A_%a.out",
        "REPORT_SBATCH": f"--cpus-per-task=1 --time=20 --output={root}/report-%j.out",
    }
    script = REPO / "slurm" / "universal.sh"
    result = subprocess.run(
        ["bash", str(script), *args], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@dataclass
class Chain:
    """One run of universal.sh to its end: its directory, what it printed, the job ids it named."""

    root: Path
    out: str
    jobs: dict[str, int]
    again: Callable[..., str]  # universal.sh again on the same directory, with these arguments

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()}" for p in sorted(self.root.glob("*.out")))


@pytest.fixture(scope="session")
def universal_chain(slurm_cluster, tmp_path_factory, imp_config, slurm_theta0_cache) -> Chain:
    """The whole chain, waited for to the report. Its IMP job, never signalled, on two nodes, is also
    the reference the signalled IMP jobs must match (tests/slurm/test_imp_sbatch.py)."""
    cluster = slurm_cluster(nodes=2)
    root = tmp_path_factory.mktemp("universal")
    out = universal(cluster, root, imp_config, slurm_theta0_cache)
    jobs = {k: int(v) for k, v in re.findall(r"^(imp|plan|finetune|report): (?:array )?job (\d+)", out, re.M)}
    chain = Chain(
        root, out, jobs, lambda *args: universal(cluster, root, imp_config, slurm_theta0_cache, *args)
    )
    assert set(jobs) == {"imp", "plan", "finetune", "report"}, out
    assert cluster.wait(jobs["report"], timeout=1500) == "COMPLETED", out + chain.logs()
    return chain
