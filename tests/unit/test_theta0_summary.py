"""theta0 identity and the per-seed summary of its criteria."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from lottery.config import PretrainConfig, load_config
from lottery.evaluation.grounding import Criterion
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


# theta0 cache keys of the shipped configs before `theta0.*` options existed: adding a section of how
# jobs treat theta0 must not move any existing theta0 (nor change the digest IMP runs and tickets record)
DIGESTS_BEFORE_THETA0_OPTIONS = {
    None: "2aaaf38152abf2704d524d75718143fedda3c0d7f64c5d9e33668bb8ec919ede",
    "pretrain-uniter-mini": "5abbc9403af73ebe22c0d872ed2950d0d3826c71aa14412dba1395592004ece0",
}


def test_theta0_identity_digest_of_existing_configs_is_unchanged_by_theta0_options():
    from lottery.config import digest
    from lottery.train.theta0 import identity

    for name, expected in DIGESTS_BEFORE_THETA0_OPTIONS.items():
        assert digest(identity(load_config(name, []))) == expected, name
        required = load_config(name, ["theta0.require_criteria=true"])
        assert digest(identity(required)) == expected, name


def test_a_run_stopped_before_a_config_field_existed_still_resumes(tmp_path):
    """Its config.yaml has no `theta0` section (added later): the missing field counts as its default."""
    import yaml

    from lottery.config import ConfigError, to_dict
    from lottery.train.pretrain import _check_run_dir

    config = replace(load_config(None, []), run_dir=str(tmp_path))
    older = {k: v for k, v in to_dict(config).items() if k != "theta0"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older, sort_keys=False))
    _check_run_dir(tmp_path, config)  # the same run: it resumes
    required = replace(config, theta0=replace(config.theta0, require_criteria=True))
    with pytest.raises(ConfigError, match=r"differs in \['theta0.require_criteria'\]"):
        _check_run_dir(tmp_path, required)  # a non-default value of the new field is another run
    older["train"]["no_such_option"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older, sort_keys=False))
    with pytest.raises(ConfigError, match="not a run record of this version.*no_such_option"):
        _check_run_dir(tmp_path, config)
