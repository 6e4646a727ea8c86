"""theta0 identity and the per-seed summary of its criteria."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

from lottery.config import PretrainConfig, load_config
from lottery.train.grounding import Criterion
from lottery.train.theta0 import seed_summary, theta0_dir


def test_theta0_identity_ignores_where_and_how_often_but_not_what(tmp_path):
    config = load_config(None, [])
    same = replace(config, run_dir="elsewhere", train=replace(config.train, log_every=7, stop_after_steps=3))
    assert theta0_dir(config, tmp_path) == theta0_dir(same, tmp_path)
    other_seed = replace(config, train=replace(config.train, seed=1))
    assert theta0_dir(config, tmp_path) != theta0_dir(other_seed, tmp_path)
    assert isinstance(config, PretrainConfig)


def test_seed_summary_gives_mean_spread_and_pass_count(tmp_path):
    dirs = []
    for seed, acc in enumerate((0.80, 0.90, 1.00)):
        d = tmp_path / str(seed)
        d.mkdir()
        rows = [asdict(Criterion("ITM accuracy", acc, 0.5, "chance", acc >= 0.9, ">= 0.9"))]
        (d / "criteria.json").write_text(json.dumps({"metrics": {}, "criteria": rows}))
        dirs.append(d)
    line = seed_summary(dirs).splitlines()[1]
    assert "0.9000" in line and "0.8000..1.0000" in line and line.endswith("2/3")
