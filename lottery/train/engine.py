"""Build the DeepSpeed engine for a run: its JSON config, the optimiser, the schedule, the precision.

The optimiser is a torch ``AdamW`` handed to DeepSpeed as the client optimiser rather than named in
the JSON: a DeepSpeed "AdamW" would JIT-build ``fused_adam`` (about 70 s on CPU here) and behaves the
same. The JSON files in ``ds_configs/`` hold only the ZeRO layout; batch sizes, accumulation, clipping
and precision come from the run config, so one run config cannot disagree with its DeepSpeed config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lottery.config import ConfigError, OptimConfig, TrainConfig

DS_CONFIG_DIR = Path(__file__).resolve().parents[2] / "ds_configs"
PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """``auto`` -> bf16 on a GPU that has it, fp32 elsewhere. bf16 on a CPU run is refused, not faked."""
    if requested not in PRECISIONS:
        raise ConfigError(f"train.precision={requested!r}; choose one of {PRECISIONS}")
    if requested == "auto":
        return "bf16" if cuda and bf16_supported else "fp32"
    if requested == "bf16" and not (cuda and bf16_supported):
        raise ConfigError(
            "train.precision=bf16 needs a GPU with bf16 support; use auto or fp32 on this machine"
        )
    return requested


def ds_config_path(train: TrainConfig) -> Path:
    """``train.ds_config`` as a file path or a name in ``ds_configs/``; empty = ``zero<stage>``."""
    name = train.ds_config or f"zero{train.zero_stage}"
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return path
    shipped = DS_CONFIG_DIR / f"{name}.json"
    if not shipped.is_file():
        known = sorted(p.stem for p in DS_CONFIG_DIR.glob("*.json"))
        raise ConfigError(f"train.ds_config={name!r}: no such file and not one of {known} in {DS_CONFIG_DIR}")
    return shipped


def build_ds_config(train: TrainConfig, optim: OptimConfig, precision: str) -> dict[str, Any]:
    """The DeepSpeed config dict: the ZeRO layout from the JSON, everything else from the run config."""
    path = ds_config_path(train)
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    ds.pop("_comment", None)
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if train.ds_config and stage != train.zero_stage:
        raise ConfigError(f"{path} sets ZeRO stage {stage} but train.zero_stage={train.zero_stage}")
    ds.update(
        train_micro_batch_size_per_gpu=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        gradient_clipping=optim.grad_clip,
        bf16={"enabled": precision == "bf16"},
        fp16={"enabled": False},
    )
    return ds


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


def build_engine(model: nn.Module, train: TrainConfig, optim: OptimConfig):
    """``deepspeed.initialize`` with our optimiser and schedule; returns (engine, precision).

    Collective: every rank must call it with the same configs.
    """
    import deepspeed

    precision = resolve_precision(
        train.precision,
        torch.cuda.is_available(),
        torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )
    optimizer = torch.optim.AdamW(param_groups(model, optim), lr=optim.lr, betas=optim.betas, eps=optim.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(optim.warmup_steps, train.steps)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=build_ds_config(train, optim, precision),
    )
    return engine, precision
