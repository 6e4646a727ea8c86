"""One live job per run directory: a lock file naming its holder (pid, host, SLURM job, start time).

Two identical commands started on one run directory (a resubmitted sbatch, a second terminal) would
both train, checkpoint and publish into the same files. The lock refuses the second with a message
that names the first, and takes over a lock left by a job that is gone:
- same host, and the holder's pid no longer runs;
- the same SLURM job id (a requeued job: SLURM keeps the id, and the old allocation is gone);
- no heartbeat for `STALE_AFTER_S`: the holder touches the file every `HEARTBEAT_S` from a daemon
  thread, so a job killed with SIGKILL on another node of a shared file system stops refreshing it.

Only rank 0 takes the lock (`holding`, through `dist.on_main` at the site ``run_lock``), so a refusal
stops every rank at once.
Creating the lock is `O_CREAT | O_EXCL`, atomic on local and NFSv3+ file systems.
A job that stops before writing anything (a refused theta0, a bad ticket) leaves no trace: releasing
the lock removes the directories the lock itself created, if they are still empty.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from lottery.files import write_json_atomic

log = logging.getLogger("lottery.run_lock")

LOCK_NAME = ".lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
UNREADABLE_GRACE_S = 5.0


class RunBusy(RuntimeError):
    """Another live job holds the run directory."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    slurm_job: str
    started: float

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), _slurm_job(), time.time())

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job}" if self.slurm_job else ""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}{job}, started {when}"


def _slurm_job() -> str:
    """The job id SLURM keeps across requeues (an array task's own id when in an array)."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID", "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def why_stale(holder: Holder, age_s: float, me: Holder) -> str | None:
    """Why the lock of `holder` (last refreshed `age_s` ago) may be taken over by `me`, or None."""
    if holder.host == me.host and holder.pid == me.pid:
        return "it is this process's own"
    if holder.host == me.host and not _pid_alive(holder.pid):
        return f"pid {holder.pid} no longer runs on {holder.host}"
    if holder.slurm_job and holder.slurm_job == me.slurm_job:
        return f"SLURM job {holder.slurm_job} was requeued"
    if age_s > STALE_AFTER_S:
        return f"no heartbeat for {age_s:.0f} s"
    return None


class RunLock:
    """`with RunLock(run_dir):` holds the directory for the body; see the module docstring."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.me = Holder.this_process()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.took_over: str | None = None  # why an old lock was replaced, for the job's log
        self._created: list[Path] = []  # directories made for the lock, deepest first

    def acquire(self) -> RunLock:
        self._created = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            holder, age = self._read()
            if holder is None and age < UNREADABLE_GRACE_S:  # another job is writing its new lock
                raise RunBusy(f"{self.path.parent}: another job is taking this directory ({self.path})")
            reason = "its lock file was unreadable" if holder is None else why_stale(holder, age, self.me)
            if reason is None:
                raise RunBusy(
                    f"{self.path.parent}: another job runs on this directory ({holder.describe()}); "
                    f"wait for it, stop it, or remove {self.path} if it is gone"
                )
            write_json_atomic(self.path, asdict(self.me))
            if self._read()[0] != self.me:  # two jobs took over the same stale lock: the last won
                raise RunBusy(f"{self.path.parent}: another job took over the stale lock {self.path} first")
            self.took_over = reason
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def release(self) -> None:
        self._stop.set()
        holder, _ = self._read()
        if holder == self.me:
            self.path.unlink(missing_ok=True)
        for directory in self._created:  # rmdir refuses a directory the job (or anyone) wrote into
            try:
                directory.rmdir()
            except OSError:
                break

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self.me), out)
            out.flush()
            os.fsync(out.fileno())
        return True

    def _read(self) -> tuple[Holder | None, float]:
        try:
            age = time.time() - self.path.stat().st_mtime
            return Holder(**json.loads(self.path.read_text())), age
        except (OSError, ValueError, TypeError):
            return None, 0.0

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:  # removed by hand: nothing to refresh
                return


@contextmanager
def holding(run_dir: Path) -> Iterator[None]:
    """Collective: rank 0 holds `run_dir`'s lock for the body; a refusal raises RunBusy on every rank."""
    from lottery import dist

    lock = RunLock(run_dir)

    def take() -> None:
        lock.acquire()
        if lock.took_over:
            log.info(f"{run_dir}: took over the lock of a job that is gone ({lock.took_over})")

    dist.on_main(take, what="run_lock")
    try:
        yield
    finally:
        if dist.is_main():
            lock.release()
