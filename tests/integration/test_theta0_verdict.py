"""Through the real CLI: a theta0 build records its verdict before DONE, and a job that requires the
criteria refuses a failed theta0 with exit 2 and one line, before any step (defect 12).

The tiny UNITER and world of test_finetune_records.py (same directory): a 2-step theta0 fails its
criteria, which is what these tests need. Run under `flock /tmp/vl-cpu.lock`: it trains.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run
from test_finetune_records import theta0_overrides, tiny_uniter

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """`lottery theta0` once on the tiny world: its output and cache directory."""
    root = tmp_path_factory.mktemp("theta0-verdict")
    tiny_uniter(root / "tiny")
    cache = root / "cache"
    proc = run(
        ["env", f"LOTTERY_THETA0_CACHE={cache}", sys.executable, "-m", "lottery", "theta0"]
        + ["--config", "pretrain-uniter-mini", *theta0_overrides(root)]
    )
    (directory,) = cache.iterdir()
    return {"root": root, "cache": cache, "directory": directory, "stdout": proc.stdout}


def test_the_build_writes_its_verdict_beside_its_criteria_and_says_it_failed(built):
    directory: Path = built["directory"]
    assert (directory / "DONE").is_file()
    criteria = json.loads((directory / "criteria.json").read_text())["criteria"]
    failed = [row["name"] for row in criteria if not row["passed"]]
    assert failed, "a 2-step theta0 was expected to fail some criterion"
    assert json.loads((directory / "verdict.json").read_text()) == {"passed": False, "failed": failed}
    assert (directory / "verdict.json").stat().st_mtime <= (directory / "DONE").stat().st_mtime
    assert f"theta0 {directory} FAILED its criteria ({', '.join(failed)})" in built["stdout"]


def test_a_finetune_requiring_the_criteria_refuses_the_failed_theta0_with_exit_2(built):
    root = built["root"]
    config = root / "ft-require.yaml"
    overrides = [*theta0_overrides(root), "theta0.require_criteria=true"]
    config.write_text(yaml.safe_dump({"runs_dir": str(root / "runs"), "theta0_overrides": overrides}))
    proc = run(
        ["env", f"LOTTERY_THETA0_CACHE={built['cache']}", sys.executable, "-m", "lottery", "finetune"]
        + ["--task", "nlvr2", "--ticket", "dense", "--config", str(config)],
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lottery:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"lottery: config error: theta0 {built['directory']} failed"
    )
    assert "theta0.require_criteria is true" in errors[0]
    assert "building" not in proc.stdout, (
        "the same theta0 must be found: the option is not part of its identity"
    )
    assert not (root / "runs").exists(), "nothing may run on a refused theta0"
