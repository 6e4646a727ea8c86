"""DeepSpeed config selection and precision: what a CPU can check of the GPU paths."""

import pytest

from lottery.config import ConfigError, load_config
from lottery.train.engine import build_ds_config, linear_warmup_decay, resolve_precision


def test_auto_precision_is_bf16_on_a_bf16_gpu_and_fp32_elsewhere():
    assert resolve_precision("auto", cuda=True, bf16_supported=True, fp16_supported=True) == "bf16"
    assert resolve_precision("auto", cuda=True, bf16_supported=False, fp16_supported=True) == "fp32"
    assert resolve_precision("auto", cuda=False, bf16_supported=True, fp16_supported=False) == "fp32"


def test_bf16_and_fp16_may_be_asked_for_on_a_cpu_that_runs_them():
    """The CPU reaches the GPU's optimizer wrappers this way (FP16_UnfusedOptimizer at stage 0 ...)."""
    assert resolve_precision("bf16", cuda=False, bf16_supported=True, fp16_supported=False) == "bf16"
    assert resolve_precision("fp16", cuda=False, bf16_supported=True, fp16_supported=True) == "fp16"


def test_a_precision_the_device_cannot_run_is_refused_not_faked():
    with pytest.raises(ConfigError, match="bf16: this device has no bf16"):
        resolve_precision("bf16", cuda=True, bf16_supported=False, fp16_supported=True)
    with pytest.raises(ConfigError, match="fp16: this CPU"):
        resolve_precision("fp16", cuda=False, bf16_supported=True, fp16_supported=False)
    with pytest.raises(ConfigError, match="choose one of"):
        resolve_precision("fp8", cuda=True, bf16_supported=True, fp16_supported=True)


def test_fp16_gets_dynamic_loss_scaling():
    config = load_config("pretrain-uniter-mini", ["train.zero_stage=0"])
    ds = build_ds_config(config.train, config.optim, "fp16")
    assert ds["fp16"]["enabled"] is True
    assert ds["fp16"]["loss_scale"] == 0  # 0 = dynamic in DeepSpeed
    assert ds["bf16"] == {"enabled": False}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_ds_config_takes_the_stage_file_and_the_run_configs_batch(stage):
    config = load_config(
        "pretrain-uniter-mini", [f"train.zero_stage={stage}", "train.batch_size=7", "train.grad_accum=3"]
    )
    ds = build_ds_config(config.train, config.optim, "bf16")
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_micro_batch_size_per_gpu"] == 7
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["gradient_clipping"] == config.optim.grad_clip
    assert ds["bf16"] == {"enabled": True}
    assert "optimizer" not in ds


def test_offload_config_is_stage_3_with_cpu_offload():
    config = load_config("pretrain-uniter-mini", ["train.zero_stage=3", "train.ds_config=zero3_offload"])
    ds = build_ds_config(config.train, config.optim, "fp32")
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["bf16"] == {"enabled": False}


def test_ds_config_stage_mismatch_is_an_error():
    config = load_config("pretrain-uniter-mini", ["train.zero_stage=2", "train.ds_config=zero3_offload"])
    with pytest.raises(ConfigError, match="stage 3"):
        build_ds_config(config.train, config.optim, "fp32")


def test_schedule_warms_up_then_decays_to_zero():
    factor = linear_warmup_decay(10, 110)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5)
    assert factor(110) == 0.0


def test_new_parts_get_their_own_lr_and_decay_rules_still_hold():
    from tiny import TINY

    from lottery.config import OptimConfig
    from lottery.models.uniter import UniterForPretraining
    from lottery.train.engine import param_groups

    model = UniterForPretraining(TINY)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, OptimConfig(lr=5e-5, new_parts_lr=5e-4, weight_decay=0.01))
    by_name = {names[id(p)]: g for g in groups for p in g["params"]}
    assert len(by_name) == len(list(model.named_parameters()))
    assert by_name["uniter.img_embeddings.img_linear.weight"]["lr"] == 5e-4
    assert by_name["itm_output.weight"]["lr"] == 5e-4
    assert by_name["uniter.encoder.layer.0.attention.self.query.weight"]["lr"] == 5e-5
    assert by_name["uniter.embeddings.word_embeddings.weight"]["lr"] == 5e-5
    assert by_name["uniter.img_embeddings.img_linear.bias"]["weight_decay"] == 0.0
    assert {g["lr"] for g in param_groups(model, OptimConfig(lr=5e-5))} == {5e-5}
