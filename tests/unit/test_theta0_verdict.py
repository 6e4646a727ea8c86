"""theta0's verdict: recorded beside it, said by every job that uses a failed one, refused on request.

Defect 12: `ensure_theta0` wrote DONE whether or not the criteria passed, and every later job used the
theta0 unremarked. These tests use a finished theta0 directory made by hand (no training); the build
itself writing verdict.json is tests/integration/test_theta0_verdict.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from lottery.cli import main
from lottery.config import ConfigError, load_config
from lottery.evaluation.grounding import Criterion
from lottery.train.theta0 import (
    VERDICT,
    Theta0Refused,
    ensure_theta0,
    read_verdict,
    theta0_dir,
    verdict_of,
    write_verdict,
)

OVERRIDES = ["data.dir=unused", "train.steps=4"]


def rows(*failing: str) -> list[Criterion]:
    names = ("ITM accuracy", "grounded MLM: colour", "MRFR loss")
    return [Criterion(n, 0.5, 0.4, "base", n not in failing, ">= x") for n in names]


def finished_theta0(root: Path, criteria: list[Criterion], overrides: list[str] = OVERRIDES) -> Path:
    """A theta0 cache entry as a build before verdicts left it: DONE, model/, criteria.json."""
    directory = theta0_dir(load_config(None, overrides), root)
    (directory / "model").mkdir(parents=True)
    (directory / "model" / "config.json").write_text("{}")
    (directory / "criteria.json").write_text(
        json.dumps({"metrics": {}, "criteria": [asdict(r) for r in criteria]})
    )
    (directory / "DONE").write_text("x\n")
    return directory


def test_the_verdict_names_the_failed_criteria_and_round_trips(tmp_path):
    verdict = verdict_of(rows("ITM accuracy", "MRFR loss"), tmp_path)
    assert not verdict.passed and verdict.failed == ("ITM accuracy", "MRFR loss")
    write_verdict(tmp_path, verdict)
    assert json.loads((tmp_path / VERDICT).read_text()) == {
        "passed": False,
        "failed": ["ITM accuracy", "MRFR loss"],
    }
    assert read_verdict(tmp_path) == verdict
    assert verdict_of(rows(), tmp_path).passed


def test_a_theta0_without_a_verdict_gets_one_from_its_criteria_and_a_failure_is_said(tmp_path, capsys):
    directory = finished_theta0(tmp_path, rows("grounded MLM: colour"))
    assert ensure_theta0(load_config(None, OVERRIDES), root=tmp_path) == directory / "model"
    assert json.loads((directory / VERDICT).read_text()) == {
        "passed": False,
        "failed": ["grounded MLM: colour"],
    }
    out = capsys.readouterr().out
    failure = [line for line in out.splitlines() if "FAILED its criteria" in line]
    assert failure == [
        f"theta0 {directory} FAILED its criteria (grounded MLM: colour): used anyway, and recorded as "
        "theta0_passed: false (theta0.require_criteria=true refuses it)"
    ]


def test_a_passing_theta0_is_used_without_a_warning_even_when_criteria_are_required(tmp_path, capsys):
    directory = finished_theta0(tmp_path, rows())
    config = load_config(None, [*OVERRIDES, "theta0.require_criteria=true"])
    assert ensure_theta0(config, root=tmp_path) == directory / "model"
    assert "FAILED" not in capsys.readouterr().out and read_verdict(directory).passed


def test_require_criteria_refuses_a_failed_theta0_in_one_line(tmp_path):
    directory = finished_theta0(tmp_path, rows("ITM accuracy"))
    config = load_config(None, [*OVERRIDES, "theta0.require_criteria=true"])
    with pytest.raises(Theta0Refused) as caught:
        ensure_theta0(config, root=tmp_path)
    assert isinstance(caught.value, ConfigError)  # the CLI's exit 2
    message = str(caught.value)
    assert "\n" not in message and str(directory) in message and "(ITM accuracy)" in message
    assert "theta0.require_criteria" in message


def test_lottery_theta0_with_require_criteria_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOTTERY_THETA0_CACHE", str(tmp_path))
    finished_theta0(tmp_path, rows("MRFR loss"))
    with pytest.raises(SystemExit) as caught:
        main(["theta0", "--config", "", *OVERRIDES, "theta0.require_criteria=true"])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lottery: config error: theta0 ") and "(MRFR loss)" in err[0]


def test_require_criteria_does_not_change_which_theta0_a_config_names(tmp_path):
    plain = theta0_dir(load_config(None, OVERRIDES), tmp_path)
    assert theta0_dir(load_config(None, [*OVERRIDES, "theta0.require_criteria=true"]), tmp_path) == plain
