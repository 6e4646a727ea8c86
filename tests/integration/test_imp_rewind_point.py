"""`imp.rewind_step`: the rewind point is the weights at step k of the round 0 that produced the masks.

Two ways to lose it used to rewind later rounds to something else without a word: an early bird that
ended round 0 before step k (no point was saved, and round 1 built a fresh model from BERT where the
point should have been), and a round 0 redone on another world size (the old point was kept).
"""

from __future__ import annotations

import shutil

import pytest
from imp_runs import launch, lighten, rewind_lines, run_dir, state, write_config

pytestmark = pytest.mark.distributed


def test_early_bird_waits_for_the_rewind_step_and_a_lost_rewind_point_stops_the_run(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    config = write_config(
        tmp_path / "imp.yaml",
        shapes_dir,
        mini_model_dir,
        zero=0,
        steps=4,
        schedule=[0.3],
        early_bird_every=1,
        early_bird_threshold=1.0,  # the bird would end round 0 at its second draw, step 2
        rewind_step=3,
    )
    lighten(config)
    first = launch(config, theta0_cache, ranks=1, fault="imp.round_01.step@1", check=False)
    assert first.returncode != 0, first.stderr[-2000:]
    directory = run_dir(config)
    assert "early-bird mask settled at step 3 of 4" in first.stdout, first.stdout[-3000:]
    built = f"building {directory / 'rewind'}"
    assert built not in first.stdout, "round 1 built a model where the rewind point should be"
    assert (directory / "rewind" / "config.json").is_file()
    lines = rewind_lines(first.stdout)
    assert len(lines) == 2 and f"round 1 starts from {directory / 'rewind'}" in lines[1], lines
    assert all(line.endswith("= 0") for line in lines), lines

    shutil.rmtree(directory / "rewind")  # lost: round 0 is done, so nothing can make it again
    again = launch(config, theta0_cache, ranks=1, check=False)
    assert again.returncode != 0
    assert f"{directory / 'rewind'}" in again.stderr and "rewind point" in again.stderr, again.stderr[-2000:]
    assert built not in again.stdout and not (directory / "rewind").exists()
    assert state(directory)["rounds_done"] == 1


def test_round_0_redone_on_another_world_size_saves_its_own_rewind_point(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    config = lighten(
        write_config(tmp_path / "imp.yaml", shapes_dir, mini_model_dir, zero=0, schedule=[0.3], rewind_step=1)
    )
    # killed at step 2 of round 0 on 2 ranks: the point of step 1 is saved, round 0 is in flight
    stopped = launch(config, theta0_cache, ranks=2, fault="imp.round_00.step@2", check=False)
    assert stopped.returncode != 0
    directory = run_dir(config)
    assert state(directory)["in_flight"] == 0 and state(directory)["in_flight_world_size"] == 2
    two_ranks = (directory / "rewind" / "model.safetensors").read_bytes()

    resumed = launch(config, theta0_cache, ranks=1)
    assert "round 0 restarts from its start" in resumed.stdout
    one_rank = (directory / "rewind" / "model.safetensors").read_bytes()
    assert one_rank != two_ranks, "round 1 rewound to step 1 of the 2-rank round 0 it did not come from"
    lines = rewind_lines(resumed.stdout)
    assert len(lines) == 2 and all(line.endswith("= 0") for line in lines), lines
    assert state(directory)["rounds_done"] == 2
