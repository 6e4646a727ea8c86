"""A grid of fine-tunes (tickets x tasks x starts), run one after another, skipping those already done.

A job is done when its run directory (named by its config) holds ``DONE`` (`lottery.run_record`; or,
written before ``DONE`` existed, metrics.json), so a sweep that was
stopped is continued by running the same command again; every job's results stay where the report reads
them. Ticket aliases are resolved to ids first: the run directory names the exact ticket, so an alias
that now points at another ticket (a new IMP run published over it) is a new job, not "done before".
``part=(i, n)`` runs every n-th job from the i-th: n processes (or a SLURM job array) share one grid.

Rank 0 alone reads the ticket store(s) and the run directories, through ``dist.on_main``: a failure
there (an alias no store knows) stops every rank at once, and no rank can decide "done before" while
another, seeing a stale file system, starts the job. Its sites (``LOTTERY_RAISE=<name>`` fails one in
tests): ``sweep.resolve_tickets`` and ``sweep.done_before``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from lottery import dist
from lottery.config import ConfigError, FinetuneConfig
from lottery.run_record import is_done
from lottery.train.finetune import finetune, run_dir_for
from lottery.train.finetune_configs import task_config

log = logging.getLogger("lottery.train.sweep")


def sweep_configs(
    tasks: Sequence[str],
    tickets: Sequence[str],
    inits: Sequence[str] = ("theta0",),
    adversarial: Sequence[bool] = (False,),
    config: str | None = None,
    overrides: Sequence[str] = (),
) -> list[FinetuneConfig]:
    """The grid, each job on its task's config (`config`, or the task's shipped one) plus `overrides`."""
    bases = {task: task_config(task, config, overrides) for task in tasks}
    grid = itertools.product(tickets, tasks, inits, adversarial)
    return [
        replace(
            bases[task], ticket=ticket, init=init, adversarial=replace(bases[task].adversarial, enabled=adv)
        )
        for ticket, task, init, adv in grid
    ]


def array_part(environ: Mapping[str, str] | None = None) -> str:
    """``--part``'s default: this SLURM array task's share of the grid, else the whole grid (``0/1``).

    I is the task's place in the array (``SLURM_ARRAY_TASK_ID`` from ``SLURM_ARRAY_TASK_MIN`` in steps
    of ``SLURM_ARRAY_TASK_STEP``), N is ``SLURM_ARRAY_TASK_COUNT``: ``sbatch --array=0-20`` over a grid of
    21 jobs runs one job per array task.
    """
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return "0/1"
    offset = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    return f"{offset // int(env.get('SLURM_ARRAY_TASK_STEP', 1))}/{env['SLURM_ARRAY_TASK_COUNT']}"


def parse_part(text: str) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4): the second of four shares of a grid (0-based, as SLURM_ARRAY_TASK_ID)."""
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"--part {text!r}: expected I/N, e.g. 0/2") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--part {text!r}: need 0 <= I < N")
    return index, count


def resolve_tickets(configs: Sequence[FinetuneConfig]) -> list[FinetuneConfig]:
    """Each config's ticket as a full id (``dense`` stays); rank 0 reads the store(s), every rank gets it."""
    from lottery.tickets import TicketStore, default_root

    def resolve() -> list[str]:
        return [
            c.ticket if c.ticket == "dense" else TicketStore(c.store or default_root()).resolve(c.ticket)
            for c in configs
        ]

    resolved = dist.on_main(resolve, what="sweep.resolve_tickets")
    return [replace(c, ticket=ticket) for c, ticket in zip(configs, resolved, strict=True)]


def missing_jobs(configs: Sequence[FinetuneConfig]) -> list[int]:
    """The grid positions (0-based, as ``--part I/len(grid)`` takes them) of the jobs not done yet."""
    resolved = resolve_tickets(configs)
    return [i for i, c in enumerate(resolved) if not is_done(run_dir_for(c), legacy=("metrics.json",))]


def sweep(configs: Sequence[FinetuneConfig], part: tuple[int, int] = (0, 1)) -> list[Path]:
    """Run every config of this part not done yet (collective); returns their run directories."""
    dist.init()
    index, count = part
    mine = resolve_tickets(configs)[index::count]
    done = []
    for number, config in enumerate(mine, start=1):
        out = run_dir_for(config)
        label = f"[{number}/{len(mine)}] {config.task} ticket={config.ticket[:12]} init={config.init}"
        label += " adversarial" if config.adversarial.enabled else ""
        if dist.on_main(partial(is_done, out, legacy=("metrics.json",)), what="sweep.done_before"):
            if dist.is_main():
                log.info(f"{label}: done before ({out}), skipped")
        else:
            if dist.is_main():
                log.info(f"{label}: running")
            finetune(config, keep_process_group=True)
        done.append(out)
    dist.shutdown()
    return done
