"""kill -9 of a 2-rank IMP run at each of its phases, one after another on the same run directory.

Each kill is a `LOTTERY_FAULT` point the run passes (lottery/faults.py): the process that reaches it
ends with SIGKILL, no cleanup, and torchrun ends its peer, as a preemption or an OOM kill would. After
every kill the directory is read as a user (or a job publishing from it) would read it: every ticket
object verifies, every alias names a stored object, every JSON record parses, `latest` names a complete
checkpoint tag. The same command is then run again; the last one finishes, and its tickets must be
byte-identical (the same content ids) to those of an uninterrupted run of the same config.

The run rewinds to step 1 of round 0 (``imp.rewind_step``), so the rewind point's save is a phase too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imp_runs import launch, rewind_lines, round_ids, run_dir, state, write_config

from lottery.tickets import TicketStore

pytestmark = pytest.mark.distributed

# In the order a run reaches them. Each kill is in the job that continues after the previous one, so the
# hit counts are this job's: e.g. the round-0 checkpoint of step 2 is the job's second checkpoint save.
PHASES = [
    ("rewind point save", "imp.rewind_save@1"),
    ("checkpoint write (its own files written, the peer's not yet known to be)", "checkpoint.written@1"),
    ("`latest` update", "checkpoint.before_latest@2"),
    ("prune (masks cut, none stored)", "imp.prune@1"),
    ("ticket write (object complete, not renamed)", "store.before_rename@1"),
    ("alias update (object stored, alias not renamed)", "store.alias_before_rename@1"),
    ("training step", "imp.round_01.step@1"),
]


def assert_readable(directory: Path) -> None:
    """What a reader finds after a kill is whole: no partial ticket, alias, record or checkpoint pointer."""
    store = TicketStore(directory / "masks")
    if store.objects_dir.is_dir():
        for ticket in store.ids():
            store.load(ticket)  # verifies the content hash and the header
    for alias, target in store.aliases().items():
        assert store.object_path(target).is_file(), f"alias {alias} names a missing object"
    for record in [directory / "state.json", *directory.glob("rounds/*/round.json")]:
        if record.exists():
            json.loads(record.read_text())
    for pointer in directory.glob("rounds/*/checkpoints/latest"):
        tag = pointer.parent / pointer.read_text().strip()
        assert tag.is_dir() and any(tag.iterdir()), f"{pointer} names an incomplete tag"
    rewind = directory / "rewind"
    if rewind.exists():
        assert (rewind / "rewind.json").is_file() and (rewind / "model.safetensors").is_file()


def test_imp_killed_at_every_phase_in_turn_finishes_with_the_uninterrupted_tickets(
    tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    # ZeRO-2: the partitioned optimizer state a resume reloads; checkpoints every step
    settings = {"zero": 2, "schedule": [0.3, 0.5], "rewind_step": 1}
    straight = write_config(tmp_path / "a" / "imp.yaml", shapes_dir, mini_model_dir, **settings)
    killed = write_config(tmp_path / "b" / "imp.yaml", shapes_dir, mini_model_dir, **settings)

    launch(straight, theta0_cache)
    expected = round_ids(run_dir(straight))
    assert list(expected) == ["round_01", "round_02"]

    seen: list[str] = []
    for phase, fault in PHASES:
        proc = launch(killed, theta0_cache, fault=fault, check=False)
        assert proc.returncode != 0, f"the run was not killed at the {phase} ({fault})"
        seen.append(phase)
        assert_readable(run_dir(killed))
    directory = run_dir(killed)
    assert state(directory)["rounds_done"] == 1 and state(directory)["in_flight"] == 1, seen
    assert "round_01" in TicketStore(directory / "masks").aliases()

    resumed = launch(killed, theta0_cache)
    assert "IMP round 0" not in resumed.stdout
    assert all(line.endswith("= 0") for line in rewind_lines(resumed.stdout))
    assert round_ids(directory) == expected
    assert state(directory)["rounds_done"] == 3
    assert not list(directory.glob("rounds/*/checkpoints")), "finished rounds keep no optimizer state"
    assert_readable(directory)
