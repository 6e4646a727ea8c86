"""train.report_to: DeepSpeed's monitor sections, the checks before any engine, our points through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lottery.config import ConfigError, load_config
from lottery.train import trackers
from lottery.train.trackers import Tracker, TrackerError, check_tracker, flat_scalars, monitor_sections


def test_csv_and_tensorboard_write_under_the_run_directory():
    run = Path("runs/imp/abc/round_02")
    assert monitor_sections("csv", run, {}, "zero0") == {
        "csv_monitor": {"enabled": True, "output_path": str(run / "csv"), "job_name": "round_02"}
    }
    assert monitor_sections("tensorboard", run, {}, "zero0")["tensorboard"]["output_path"] == str(
        run / "tensorboard"
    )
    assert monitor_sections("none", run, {"tensorboard": {"enabled": True}}, "mine.json") == {}


def test_wandb_takes_its_project_from_the_environment_and_groups_by_the_parent_run(monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    section = monitor_sections("wandb", Path("runs/imp/abc/round_02"), {}, "zero0")["wandb"]
    assert section == {"enabled": True, "project": "mine", "group": "abc"}


def test_a_users_json_enabling_another_monitor_is_refused_naming_both():
    with pytest.raises(
        TrackerError, match="train.report_to=csv but mine.json enables the tensorboard monitor"
    ):
        monitor_sections("csv", Path("run"), {"tensorboard": {"enabled": True}}, "mine.json")
    kept = monitor_sections("csv", Path("run"), {"csv_monitor": {"enabled": True, "x": 1}}, "mine.json")
    assert kept["csv_monitor"]["x"] == 1  # the same monitor: its other settings stay


def test_a_tracker_whose_package_is_missing_is_refused_saying_what_to_install(monkeypatch):
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TrackerError, match="the 'wandb' package is not installed; `pip install wandb`"):
        check_tracker("wandb")
    check_tracker("csv")  # needs nothing
    check_tracker("none")


def test_report_to_outside_its_choices_is_a_config_error():
    with pytest.raises(
        ConfigError, match="train.report_to: 'mlflow' is not one of none, tensorboard, wandb, csv"
    ):
        load_config("pretrain-uniter-mini", ["train.report_to=mlflow"])


def test_report_to_is_not_part_of_a_runs_identity():
    """Watching a run in TensorBoard must find the same run directory and theta0, not train again."""
    from lottery.run_record import run_digest

    plain = load_config("pretrain-uniter-mini", [])
    tracked = load_config("pretrain-uniter-mini", ["train.report_to=csv"])
    assert run_digest(plain) == run_digest(tracked)


def test_records_become_slash_named_scalars_and_non_numbers_are_left_out():
    record = {"step": 3, "loss": 2.5, "losses": {"mlm": 3.0, "itm": 0.7}, "task": "vqa", "ok": True}
    assert flat_scalars(record) == {"step": 3.0, "loss": 2.5, "losses/mlm": 3.0, "losses/itm": 0.7}


class FakeMonitor:
    enabled = True

    def __init__(self) -> None:
        self.events: list[tuple[str, float, int]] = []

    def write_events(self, events):
        self.events.extend(events)


class FakeEngine:
    def __init__(self, monitor) -> None:
        self.monitor = monitor


def test_the_tracker_writes_each_number_at_its_step_and_nothing_without_a_monitor():
    monitor = FakeMonitor()
    Tracker(FakeEngine(monitor)).log({"step": 4, "loss": 1.5, "losses": {"mlm": 2.0}}, "train")
    assert monitor.events == [("train/loss", 1.5, 4), ("train/losses/mlm", 2.0, 4)]
    off = FakeMonitor()
    off.enabled = False
    Tracker(FakeEngine(off)).log({"step": 1, "loss": 1.0}, "train")
    assert off.events == []
