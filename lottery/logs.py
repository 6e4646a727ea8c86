"""The job log: Python `logging`, configured once by the ``lottery`` command, aware of ranks.

What a job tells while it runs (a round starting, a resume, a skipped finished job, a theta0 that
failed its criteria) goes through the ``lottery.*`` loggers. The command configures them (`configure`):
rank 0 logs at INFO, every other rank at WARNING with a ``[rank N]`` prefix, so an 8-rank job prints
each line once and still shows a warning any rank raises. ``LOTTERY_LOG_LEVEL=DEBUG|INFO|WARNING``
overrides the level on every rank. The log goes to stdout (the SLURM ``.out`` file), with the command's
own output; the one-line errors a command ends on go to stderr (cli_errors.py).

A library user (`lottery.api`) gets no handler from us: their logging configuration decides.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "lottery"
LEVEL_ENV = "LOTTERY_LOG_LEVEL"
# the variables launchers set for a process's global rank, read without torch (before any process group)
RANK_ENV = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is when a record is emitted (pytest's capture, a redirect)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always reads sys.stdout
        pass


def global_rank() -> int:
    """This process's rank as its launcher set it (0 without one)."""
    for name in RANK_ENV:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def configure() -> None:
    """Set up the ``lottery`` loggers for this process (idempotent; a second call changes nothing)."""
    logger = logging.getLogger(ROOT)
    if any(isinstance(handler, _CurrentStdout) for handler in logger.handlers):
        return
    rank = global_rank()
    level = os.environ.get(LEVEL_ENV, "").upper() or ("INFO" if rank == 0 else "WARNING")
    if level not in logging.getLevelNamesMapping():
        from lottery.config_loader import ConfigError  # the command's exit 2

        raise ConfigError(f"{LEVEL_ENV}={level}: not a logging level (DEBUG, INFO, WARNING, ERROR)")
    handler = _CurrentStdout()
    handler.setFormatter(logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # a user's root handler would print every line twice
