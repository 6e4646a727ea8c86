"""Build the DeepSpeed engine for a run: its JSON config, the optimiser, the schedule, the precision.

The optimiser is a torch ``AdamW`` handed to DeepSpeed as the client optimiser rather than named in
the JSON: a DeepSpeed "AdamW" would JIT-build ``fused_adam`` (about 70 s on CPU here) and behaves the
same. The JSON files in ``lottery/ds_configs/`` hold only the ZeRO layout; batch sizes, accumulation, clipping
and precision come from the run config, and a user's JSON that disagrees with it is refused (ds_json.py).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lottery.config import PRECISIONS, ConfigError, OptimConfig, TrainConfig

# the JSON's reading and filling live in their own module; their names are part of this module's interface
from lottery.train.ds_json import (  # noqa: F401
    FP16_SECTION,
    ds_config_path,
    fill_ds_config,
    read_ds_json,
    requested_precision,
)
from lottery.train.trackers import monitor_sections

log = logging.getLogger("lottery.train.engine")


def resolve_precision(requested: str, cuda: bool, bf16_supported: bool, fp16_supported: bool) -> str:
    """``auto`` -> bf16 on a GPU that has it, fp32 elsewhere (fp16 is asked for, never picked: its
    loss scaling skips steps on overflow, a choice the user makes).

    bf16 and fp16 may be asked for on a CPU where DeepSpeed's CPU accelerator runs them: they take the
    same optimizer wrappers as a GPU run (fp32 masters, loss scaling), which is how the tests reach
    the GPU's optimizer paths without one. Where the hardware cannot run them they are refused.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"train.precision={requested!r}; choose one of {PRECISIONS}")
    if requested == "auto":
        return "bf16" if cuda and bf16_supported else "fp32"
    if requested == "bf16" and not bf16_supported:
        raise ConfigError("train.precision=bf16: this device has no bf16 support; use fp16 (GPU) or fp32")
    if requested == "fp16" and not fp16_supported:
        where = "this GPU" if cuda else "this CPU (DeepSpeed needs oneDNN fp16 on a CPU)"
        raise ConfigError(f"train.precision=fp16: {where} cannot run fp16; use bf16 or fp32")
    return requested


def working_dtype(precision: str) -> torch.dtype:
    """The dtype of the module's weights (and of the float inputs fed to them) under `precision`."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def device_precision_support() -> tuple[bool, bool, bool]:
    """(cuda, bf16 supported, fp16 supported) on the device this process trains on."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    cuda = torch.cuda.is_available()
    return cuda, bool(accelerator.is_bf16_supported()), bool(accelerator.is_fp16_supported())


def build_ds_config(
    train: TrainConfig,
    optim: OptimConfig,
    precision: str,
    *,
    world: int | None = None,
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config dict: the ZeRO layout from the JSON, everything else from the run config."""
    path, ds = read_ds_json(train)
    return fill_ds_config(ds, path, train, optim, precision, world=world, hidden_size=hidden_size)


def param_groups(model: nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups as UNITER/BERT: no weight decay on biases and LayerNorm weights; with
    ``optim.new_parts_lr``, the parameters matching ``optim.new_parts`` get that lr.

    ``named_parameters`` yields a tied parameter once, so the tied decoder/feat_regress weights are
    optimised once, under their first name (the pre-trained word embeddings, and img_linear).
    """
    new_parts = [re.compile(p) for p in optim.new_parts] if optim.new_parts_lr else []
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = (
            name.endswith(".bias")
            or "LayerNorm" in name
            or "layer_norm" in name
            or name.endswith("net.2.weight")
        )
        new = any(p.fullmatch(name) for p in new_parts)
        groups.setdefault((skip, new), []).append(param)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if skip else optim.weight_decay,
            "lr": optim.new_parts_lr if new else optim.lr,
        }
        for (skip, new), params in sorted(groups.items())
    ]


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """Multiplier for ``LambdaLR``: linear rise over warm-up, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def build_engine(model: nn.Module, train: TrainConfig, optim: OptimConfig, run_dir: Path | None = None):
    """``deepspeed.initialize`` with our optimiser and schedule; returns (engine, precision).

    `run_dir`: where ``train.report_to``'s monitor writes (lottery.train.trackers); None: no tracker.
    Collective: every rank must call it with the same configs.
    """
    import deepspeed

    from lottery import dist
    from lottery.train.weights_only import install as install_weights_only

    path, ds = read_ds_json(train)
    requested, source = requested_precision(train, ds, path)
    precision = resolve_precision(requested, *device_precision_support())
    if source != "train.precision" and dist.is_main():
        log.info(f"lottery: train.precision=auto takes {precision} from {source}")
    hidden_size = getattr(getattr(model, "config", None), "hidden_size", None)
    if run_dir is not None:
        ds.update(monitor_sections(train.report_to, run_dir, ds, path))
    optimizer = torch.optim.AdamW(param_groups(model, optim), lr=optim.lr, betas=optim.betas, eps=optim.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(optim.warmup_steps, train.steps)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=fill_ds_config(
            ds, path, train, optim, precision, world=dist.world_size(), hidden_size=hidden_size
        ),
    )
    install_weights_only(engine)  # a resume unpickles no code (DeepSpeed's own load would)
    return engine, precision
