"""The job log: rank 0 at INFO, other ranks at WARNING with their rank, a level from the environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = (
    "import logging\n"
    "from lottery import logs\n"
    "logs.configure()\n"
    "logs.configure()\n"  # idempotent: still one line per record
    "log = logging.getLogger('lottery.train.pretrain')\n"
    "log.info('resumed from the checkpoint at step 5')\n"
    "log.warning('theta0 FAILED its criteria')\n"
    "log.debug('detail')\n"
)


def job_log(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "SLURM_PROCID")}
    return subprocess.run([sys.executable, "-c", CODE], env={**clean, **env}, capture_output=True, text=True)


def test_rank_0_logs_info_once_to_stdout():
    done = job_log({})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["resumed from the checkpoint at step 5", "theta0 FAILED its criteria"]


@pytest.mark.parametrize("variable", ["RANK", "SLURM_PROCID"])
def test_other_ranks_log_only_warnings_prefixed_with_their_rank(variable):
    done = job_log({variable: "3"})
    assert done.stdout.splitlines() == ["[rank 3] theta0 FAILED its criteria"]


def test_the_level_comes_from_the_environment_on_every_rank():
    assert job_log({"LOTTERY_LOG_LEVEL": "debug", "RANK": "1"}).stdout.splitlines()[-1] == "[rank 1] detail"
    assert job_log({"LOTTERY_LOG_LEVEL": "WARNING"}).stdout.splitlines() == ["theta0 FAILED its criteria"]


def test_a_bad_level_is_one_line_and_exit_2():
    done = subprocess.run(
        [sys.executable, "-m", "lottery", "config", "show"],
        env={**os.environ, "LOTTERY_LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "lottery: config error: LOTTERY_LOG_LEVEL=LOUD: not a logging level (DEBUG, INFO, WARNING, ERROR)"
    ]
