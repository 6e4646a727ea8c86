"""Run configs: YAML + overrides, typed, and errors that name the key."""

from dataclasses import replace

import pytest

from lottery.config import ConfigError, PretrainConfig, digest, load_config, to_yaml


def test_shipped_config_loads_with_uniter_defaults():
    config = load_config("pretrain-uniter-mini")
    assert isinstance(config, PretrainConfig)
    assert config.optim.lr == 5e-5
    assert config.optim.betas == (0.9, 0.98)
    assert config.tasks.mix == {
        "itm": 3.0,
        "mlm": 3.0,
        "mrfr": 1.0,
        "mrckl": 1.0,
    }  # the theta0 recipe (issue 11)


def test_overrides_are_typed_and_applied_in_order():
    config = load_config("pretrain-uniter-mini", ["train.steps=50", "optim.lr=1e-4", "train.steps=60"])
    assert config.train.steps == 60
    assert config.optim.lr == pytest.approx(1e-4)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.stpes"):
        load_config("pretrain-uniter-mini", ["train.stpes=50"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train\.steps: expected int"):
        load_config("pretrain-uniter-mini", ["train.steps=fifty"])


def test_unknown_config_name_lists_shipped_ones():
    with pytest.raises(ConfigError, match="pretrain-uniter-mini"):
        load_config("no-such-config")


def test_digest_identifies_the_resolved_config(tmp_path):
    base = load_config("pretrain-uniter-mini")
    path = tmp_path / "copy.yaml"
    path.write_text(to_yaml(base))
    assert digest(load_config(str(path))) == digest(base)
    assert digest(load_config(str(path), ["train.seed=1"])) != digest(base)


def test_a_partial_section_override_keeps_that_sections_own_defaults():
    """`train.steps=60` on a fine-tune must not swap its ZeRO-0, no-checkpoint train section for
    the pre-training one (ZeRO-2, checkpoints every 100 steps)."""
    from lottery.config import FinetuneConfig

    config = load_config(None, ["train.steps=60", "optim.lr=1.0e-4"], cls=FinetuneConfig)
    default = FinetuneConfig()
    assert config.train == replace(default.train, steps=60)
    assert config.optim == replace(default.optim, lr=1e-4)
    assert config.train.zero_stage == 0 and config.optim.new_parts == (r"head\..*",)


@pytest.mark.parametrize(
    "key", ["mask_prob", "itm_neg_prob", "itm_relation_neg_prob", "itm_attribute_neg_prob"]
)
def test_a_task_probability_outside_0_1_is_refused_naming_it(key):
    with pytest.raises(ConfigError, match=rf"tasks.{key}: 1.5 must be within \[0, 1\]"):
        load_config(None, [f"tasks.{key}=1.5"], cls=PretrainConfig)
