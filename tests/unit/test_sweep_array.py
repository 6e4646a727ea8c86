"""A fine-tuning job array: each array task's share of the grid, and which grid positions are not done."""

from __future__ import annotations

import pytest

from lottery.config import ConfigError
from lottery.run_record import mark_done
from lottery.train.finetune import run_dir_for
from lottery.train.sweep import array_part, missing_jobs, parse_part, sweep_configs


def test_outside_an_array_the_part_is_the_whole_grid():
    assert array_part({}) == "0/1"


@pytest.mark.parametrize(
    ("env", "part"),
    [
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "21", "SLURM_ARRAY_TASK_MIN": "0"}, "4/21"),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}, "4/3"),
        (
            {
                "SLURM_ARRAY_TASK_ID": "7",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            "3/4",
        ),
    ],
)
def test_an_array_task_takes_its_place_in_the_array(env, part):
    assert array_part(env) == part


def test_an_array_that_does_not_fit_the_grid_is_refused_naming_the_part():
    with pytest.raises(ConfigError, match="--part '4/3'"):
        parse_part(
            array_part(
                {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}
            )
        )


def test_missing_jobs_are_the_grid_positions_without_done(tmp_path):
    configs = sweep_configs(["vqa", "gqa"], ["dense"], ["theta0", "bert"], overrides=[f"runs_dir={tmp_path}"])
    assert missing_jobs(configs) == [0, 1, 2, 3]
    mark_done(run_dir_for(configs[1]), "x")
    legacy = run_dir_for(configs[2])
    legacy.mkdir(parents=True)
    (legacy / "metrics.json").write_text("{}")  # a run finished before DONE existed
    assert missing_jobs(configs) == [0, 3]
