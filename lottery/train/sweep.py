"""A grid of fine-tunes (tickets x tasks x starts), run one after another, skipping those already done.

A job is done when its run directory (named by its config) holds metrics.json, so a sweep that was
stopped is continued by running the same command again; every job's results stay where the report reads them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from lottery import dist
from lottery.config import FinetuneConfig
from lottery.train.finetune import finetune, run_dir_for


def sweep_configs(
    base: FinetuneConfig,
    tasks: Sequence[str],
    tickets: Sequence[str],
    inits: Sequence[str] = ("theta0",),
    adversarial: Sequence[bool] = (False,),
) -> list[FinetuneConfig]:
    grid = itertools.product(tickets, tasks, inits, adversarial)
    return [
        replace(base, task=task, ticket=ticket, init=init, adversarial=replace(base.adversarial, enabled=adv))
        for ticket, task, init, adv in grid
    ]


def sweep(configs: Sequence[FinetuneConfig]) -> list[Path]:
    """Run every config whose metrics.json is missing (collective); returns all run directories."""
    dist.init()
    done = []
    for number, config in enumerate(configs, start=1):
        out = run_dir_for(config)
        label = f"[{number}/{len(configs)}] {config.task} ticket={config.ticket} init={config.init}"
        label += " adversarial" if config.adversarial.enabled else ""
        if (out / "metrics.json").is_file():
            if dist.is_main():
                print(f"{label}: done before ({out}), skipped", flush=True)
        else:
            if dist.is_main():
                print(f"{label}: running", flush=True)
            finetune(config, keep_process_group=True)
        done.append(out)
    dist.shutdown()
    return done
