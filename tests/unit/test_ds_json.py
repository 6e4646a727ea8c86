"""A user's DeepSpeed JSON (`train.ds_config=mine.json`) agrees with the run config or is refused: "auto"
is filled from the run config, a conflicting value names both sides, accelerate's precision is heard."""

from __future__ import annotations

import json

import pytest

from lottery.config import ConfigError, load_config
from lottery.train.ds_json import check_ds_config, fill_ds_config, read_ds_json, requested_precision


def user_layout(tmp_path, content: dict, *overrides: str):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(content))
    return load_config("pretrain-uniter-mini", [f"train.ds_config={path}", *overrides]), path


def filled(config, precision="bf16", **known):
    path, ds = read_ds_json(config.train)
    return fill_ds_config(ds, path, config.train, config.optim, precision, **known)


def test_auto_values_take_the_run_configs_and_the_models_hidden_size(tmp_path):
    config, _ = user_layout(
        tmp_path,
        {
            "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"},
            "zero_optimization": {
                "stage": "auto",
                "reduce_bucket_size": "auto",
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
            },
        },
        "train.batch_size=6",
        "train.grad_accum=2",
        "train.zero_stage=3",
        "optim.grad_clip=1.5",
    )
    ds = filled(config, world=4, hidden_size=384)
    assert ds["train_batch_size"] == 6 * 2 * 4
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (6, 2)
    assert ds["gradient_clipping"] == 1.5 and ds["bf16"] == {"enabled": True}
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["reduce_bucket_size"] == 384 * 384
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 384 * 384)
    assert zero["stage3_param_persistence_threshold"] == 3840


@pytest.mark.parametrize(
    ("content", "overrides", "named"),
    [
        (
            {"gradient_clipping": 1.0},
            ("optim.grad_clip=2.0",),
            "gradient_clipping=1.0 but optim.grad_clip=2.0",
        ),
        (
            {"train_micro_batch_size_per_gpu": 32},
            ("train.batch_size=16",),
            "train_micro_batch_size_per_gpu=32 but train.batch_size=16",
        ),
        (
            {"zero_optimization": {"stage": 3}},
            ("train.zero_stage=2",),
            "sets ZeRO stage 3 but train.zero_stage=2",
        ),
        ({"optimizer": {"type": "Adam"}}, (), '"optimizer" is set by the run config'),
        ({"wall_clock_breakdown": "auto"}, (), 'wall_clock_breakdown="auto" is not a value lottery can fill'),
    ],
)
def test_a_value_that_disagrees_with_the_run_config_is_refused_naming_both(
    tmp_path, content, overrides, named
):
    config, path = user_layout(tmp_path, content, *overrides)
    with pytest.raises(ConfigError) as err:
        check_ds_config(config.train, config.optim, env={})
    assert str(err.value).startswith(str(path)) and named in str(err.value)


def test_the_users_other_precision_settings_stay(tmp_path):
    config, _ = user_layout(tmp_path, {"fp16": {"enabled": "auto", "initial_scale_power": 8}})
    ds = filled(config, precision="fp16")
    assert ds["fp16"]["enabled"] is True and ds["fp16"]["initial_scale_power"] == 8
    assert ds["fp16"]["loss_scale"] == 0  # dynamic scaling kept from our defaults


def test_a_json_precision_under_auto_is_adopted_and_against_an_explicit_one_refused(tmp_path):
    config, path = user_layout(tmp_path, {"bf16": {"enabled": True}})
    _, ds = read_ds_json(config.train)
    assert requested_precision(config.train, ds, path, env={}) == ("bf16", f"{path} (bf16.enabled=true)")
    explicit, _ = user_layout(tmp_path, {"bf16": {"enabled": True}}, "train.precision=fp32")
    with pytest.raises(ConfigError, match=r"train.precision=fp32 but .* asks for bf16"):
        requested_precision(explicit.train, ds, path, env={})


def test_accelerates_mixed_precision_is_heard_not_ignored():
    config = load_config("pretrain-uniter-mini", [])
    path, ds = read_ds_json(config.train)
    env = {"ACCELERATE_MIXED_PRECISION": "bf16"}
    assert requested_precision(config.train, ds, path, env) == ("bf16", "ACCELERATE_MIXED_PRECISION=bf16")
    assert requested_precision(config.train, ds, path, {"ACCELERATE_MIXED_PRECISION": "no"})[0] == "auto"
    fp32 = load_config("pretrain-uniter-mini", ["train.precision=fp32"])
    with pytest.raises(ConfigError, match="train.precision=fp32 but ACCELERATE_MIXED_PRECISION=bf16"):
        requested_precision(fp32.train, ds, path, env)
    with pytest.raises(ConfigError, match="ACCELERATE_MIXED_PRECISION=fp8"):
        requested_precision(config.train, ds, path, {"ACCELERATE_MIXED_PRECISION": "fp8"})


def test_a_json_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    config = load_config("pretrain-uniter-mini", [f"train.ds_config={path}"])
    with pytest.raises(ConfigError, match=f"{path}: not valid JSON"):
        check_ds_config(config.train, config.optim, env={})
