"""`lottery imp` through the real launchers: exact schedules, rewind, world-size change (kill -9 at each
phase: tests/faults/test_imp_kills.py).

Rounds are 2 steps long on the small shapes world; theta0 is a 4-step pre-training built once for the
session (its cache is shared). The rewind check is the run's own: every round prints the largest
|weight - theta0 * mask| over the prunable weights of its engine at its start, and fails if not 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run
from imp_runs import launch, rewind_lines, round_ids, run_dir, state, write_config

from lottery.tickets import TicketStore

pytestmark = pytest.mark.distributed


def test_imp_stopped_on_two_ranks_finishes_on_one_keeping_finished_rounds(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    config = write_config(tmp_path / "imp.yaml", shapes_dir, mini_model_dir, zero=2, schedule=[0.3, 0.5])
    stopped = launch(config, theta0_cache, fault="imp.round_02.step@2", check=False)
    assert stopped.returncode != 0
    assert len(rewind_lines(stopped.stdout)) == 3 and all(
        x.endswith("= 0") for x in rewind_lines(stopped.stdout)
    )
    directory = run_dir(config)
    before = round_ids(directory)
    assert list(before) == ["round_01", "round_02"] and state(directory)["in_flight_world_size"] == 2
    assert not (directory / "DONE").exists(), "an IMP run stopped mid-round is marked done"

    resumed = launch(config, theta0_cache, ranks=1)
    assert "was begun on 2 rank(s), this job has 1" in resumed.stdout
    assert "round 2 restarts from its start" in resumed.stdout
    assert round_ids(directory) == before
    table = json.loads((directory / "rounds.json").read_text())
    assert [row["round"] for row in table["rounds"]] == [0, 1, 2]
    assert all(line.endswith("= 0") for line in rewind_lines(resumed.stdout))
    # DONE holds the run's identity digest, whose first 12 digits name the directory
    assert (directory / "DONE").read_text().startswith(directory.name.split("-", 1)[1])


def test_the_three_methods_cut_exact_equal_sparsities_and_random_differs(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    masks = {}
    for method, zero, ranks in (("imp", 1, 2), ("oneshot", 0, 1), ("random", 0, 1)):
        config = write_config(
            tmp_path / method / "imp.yaml",
            shapes_dir,
            mini_model_dir,
            zero=zero,
            method=method,
            schedule=[0.3, 0.5],
        )
        proc = launch(config, theta0_cache, ranks=ranks)
        assert all(line.endswith("= 0") for line in rewind_lines(proc.stdout))
        store = TicketStore(run_dir(config) / "masks")
        masks[method] = {alias: store.load(alias) for alias in ("round_01", "round_02")}
    for method, tickets in masks.items():
        for alias, target in (("round_01", 0.3), ("round_02", 0.5)):
            ticket = tickets[alias]
            pruned = ticket.masks.total - ticket.masks.kept
            assert pruned == round(target * ticket.masks.total), (method, alias)
            assert ticket.meta.method == method and ticket.meta.tasks == ("itm", "mlm", "mrckl", "mrfr")
    assert masks["random"]["round_02"].masks != masks["imp"]["round_02"].masks
    assert masks["oneshot"]["round_01"].masks != masks["random"]["round_01"].masks
    # IMP's masks are nested: a weight pruned in round 1 stays pruned
    first, second = (masks["imp"][a].masks.masks for a in ("round_01", "round_02"))
    assert all(not (second[n] & ~first[n]).any() for n in first)


def test_early_bird_ends_a_round_and_a_rerun_keeps_that_end(
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
        early_bird_threshold=1.0,  # any distance is below 1: the round ends at its second draw
        rewind_step=1,
    )
    first = launch(config, theta0_cache, ranks=1)
    directory = run_dir(config)
    assert "early-bird mask settled at step 2 of 4" in first.stdout
    assert (directory / "rewind" / "config.json").is_file()
    assert f"IMP round 1 starts from {directory / 'rewind'}" in first.stdout
    table = json.loads((directory / "rounds.json").read_text())
    draws = table["rounds"][0]["early_bird"]
    assert [d["step"] for d in draws] == [1, 2] and draws[-1]["distance_to_final"] == 0.0
    assert "early bird: the rounds ended after 6 of 8 steps (25% saved)" in first.stdout
    ids = round_ids(directory)
    again = launch(config, theta0_cache, ranks=1)
    assert "IMP round" not in again.stdout and round_ids(directory) == ids


def test_imp_on_a_downstream_task_gives_task_tickets_and_survives_a_kill(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    """imp.objective=nlvr2: each round is the task's fine-tune from theta0 under the round's mask; a
    round killed mid-way is redone from its start (fine-tunes keep no checkpoint) to the same mask."""

    def config_for(name: str) -> Path:
        return write_config(
            tmp_path / name / "imp.yaml",
            shapes_dir,
            mini_model_dir,
            zero=0,
            steps=2,
            schedule=[0.3, 0.5],
            objective="nlvr2",
            task_overrides=["data.train_examples=32", "data.val_examples=8"],
        )

    killed, clean = config_for("killed"), config_for("clean")
    first = launch(killed, theta0_cache, ranks=1, fault="imp.round_01.step@1", check=False)
    assert first.returncode != 0 and "IMP round 1" in first.stdout
    rerun = launch(killed, theta0_cache, ranks=1)
    assert "IMP round 0" not in rerun.stdout and "IMP round 1" in rerun.stdout
    assert len(rewind_lines(first.stdout + rerun.stdout)) == 4  # rounds 0, 1 (twice), 2
    assert all(line.endswith("= 0") for line in rewind_lines(rerun.stdout))
    launch(clean, theta0_cache, ranks=1)
    assert round_ids(run_dir(killed)) == round_ids(run_dir(clean))
    store = TicketStore(run_dir(killed) / "masks")
    ticket = store.load("round_02")
    assert ticket.meta.tasks == ("nlvr2",) and abs(ticket.masks.sparsity - 0.5) < 1e-3
    table = json.loads((run_dir(killed) / "rounds.json").read_text())
    assert [row["round"] for row in table["rounds"]] == [0, 1, 2]
    assert all("accuracy" in row["val"] for row in table["rounds"])
    assert table["reference"][0]["label"] == "chance"
    assert "accuracy" in rerun.stdout  # the per-round table shows the task's metric


def test_a_broken_enforcer_stops_the_round_naming_the_parameter_and_publishes_nothing(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    """The test switch leaves gradients unmasked; the default verification (at checkpoints and the
    round's end) must stop round 1 before its mask is cut, and nothing is published."""
    publish = tmp_path / "published"
    config = write_config(
        tmp_path / "imp.yaml",
        shapes_dir,
        mini_model_dir,
        zero=0,
        schedule=[0.3, 0.5],
        publish={0.5: "mini/s50"},
        store=str(publish),
    )
    text = yaml.safe_load(config.read_text())
    text["train"]["ckpt_every"] = 100  # only the round's last step is checkpointed, and checked first
    config.write_text(yaml.safe_dump(text))
    proc = run(
        ["env", "LOTTERY_TEST_BREAK_ENFORCER=1", f"LOTTERY_THETA0_CACHE={theta0_cache}", sys.executable]
        + ["-m", "lottery", "imp", "--config", str(config)],
        timeout=900,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    # tqdm may share the line: the message starts wherever "lottery: mask violated" does
    line = [
        entry.partition("lottery: ")[2]
        for entry in proc.stderr.splitlines()
        if "lottery: mask violated" in entry
    ]
    assert line, proc.stderr[-2000:]
    assert "mask violated before the checkpoint of step 2:" in line[0]  # the round's last step
    assert "first uniter.encoder.layer.0.attention.self.query.weight" in line[0]
    assert " in weight" in line[0] and " in exp_avg" in line[0]
    directory = run_dir(config)
    assert set(round_ids(directory)) == {"round_01"}, "round 1 must not have cut round 2's mask"
    assert state(directory)["rounds_done"] == 1
    assert not (publish / "refs").exists() or not any((publish / "refs").rglob("*"))


def test_bf16_imp_on_zero3_starts_every_round_exactly_from_theta0_as_a_bf16_engine_holds_it(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    """The GPU's default precision on a CPU: the fp32 master is built from the bf16 module, so the
    rewind check compares it with bf16(theta0) * mask, which it must equal exactly; the masks hold."""
    config = write_config(tmp_path / "imp.yaml", shapes_dir, mini_model_dir, zero=3, schedule=[0.5])
    text = yaml.safe_load(config.read_text())
    text["train"]["precision"] = "bf16"
    config.write_text(yaml.safe_dump(text))
    proc = launch(config, theta0_cache)
    lines = rewind_lines(proc.stdout)
    assert len(lines) == 2 and all(line.endswith("(bfloat16 engine) = 0") for line in lines), lines
    masks = TicketStore(run_dir(config) / "masks").load("round_01").masks
    assert masks.sparsity == pytest.approx(0.5, abs=1e-6)
    assert state(run_dir(config))["rounds_done"] == 2
