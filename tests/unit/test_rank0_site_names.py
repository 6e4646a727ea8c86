"""Rank-0 sites keep stable names: each module's docstring lists exactly the `dist.on_main` sites it has.

`LOTTERY_RAISE=<name>` is how tests (and a user chasing a hang) fail one site; a renamed site that its
docstring still lists under the old name would make such a test pass for the wrong reason.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
import torch

from lottery.faults import InjectedFault
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketMeta

MODULES = {
    "lottery.train.checkpoint": {"checkpoint.latest_step", "checkpoint.commit"},
    "lottery.train.pretrain": {
        "pretrain.config_yaml",
        "pretrain.model_written",
        "pretrain.metrics_truncate",
        "pretrain.metrics",
        "pretrain.save_model",
        "pretrain.done",
    },
    "lottery.train.finetune": {
        "finetune.theta0_verdict",
        "finetune.config_yaml",
        "finetune.track",
        "finetune.metrics",
    },
    "lottery.train.sweep": {"sweep.resolve_tickets", "sweep.done_before"},
    "lottery.imp.early_bird": {"early_bird.alias", "early_bird.record"},
    "lottery.run_lock": {"run_lock"},
    "lottery.train.assets": {"assets.shapes_world", "assets.model"},
    "lottery.train.theta0": {"theta0.done", "theta0.model_written", "theta0.record", "theta0.verdict"},
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_docstring_lists_every_site_of_its_module(name):
    module = importlib.import_module(name)
    used = set(re.findall(r'what="([\w.]+)"', inspect.getsource(module)))
    assert used == MODULES[name]
    for site in used:
        assert f"``{site}``" in (module.__doc__ or ""), site


def test_sites_fail_on_demand_in_one_process(tmp_path, monkeypatch):
    from lottery.imp.early_bird import EarlyBird
    from lottery.train.checkpoint import resume_step
    from lottery.train.sweep import resolve_tickets

    bird = EarlyBird(
        tmp_path,
        MaskSet({"w": torch.ones(8, dtype=torch.bool)}),
        0.5,
        every=2,
        threshold=0.0,
        meta=TicketMeta(family="uniter", model="tiny", method="imp"),
    )
    for site, call in [
        ("checkpoint.latest_step", lambda: resume_step(tmp_path)),
        ("sweep.resolve_tickets", lambda: resolve_tickets([])),
        ("early_bird.alias", lambda: bird._draw(2)),
    ]:
        monkeypatch.setenv("LOTTERY_RAISE", site)
        with pytest.raises(InjectedFault, match=site):
            call()
    monkeypatch.delenv("LOTTERY_RAISE")
    assert bird._draw(2) is None and resume_step(tmp_path) is None and resolve_tickets([]) == []
