"""A run's DeepSpeed JSON made to agree with its run config: what the run config decides is filled in,
and a user's value that disagrees with it is refused, naming both, instead of being overwritten.

The run config decides the micro-batch, the accumulation, the clipping, the precision and the ZeRO stage
(and the optimiser and its schedule, which lottery hands DeepSpeed itself). A layout JSON (a shipped
one, or the user's ``train.ds_config``) may leave those keys out or write ``"auto"``, as Hugging Face's
templates do: lottery fills them in, and fills the three ZeRO bucket sizes that such templates derive
from the model's hidden size the same way. Any other ``"auto"`` is refused: nothing here knows it.

Precision may also be asked for by the JSON (``bf16.enabled: true``) or by ``accelerate launch
--mixed_precision`` (which exports ``ACCELERATE_MIXED_PRECISION``). Under ``train.precision=auto`` such a
request is adopted (and the choice printed); against an explicit ``train.precision`` a different one is
refused. Accelerate's ``no`` is its default and so says nothing: ``train.precision`` decides.

Reads only files and the environment (no torch), so every rank can run the checks before any process
group exists (``check_ds_config``) and every rank fails the same way.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lottery.config import ConfigError, OptimConfig, TrainConfig
from lottery.resources import DS_CONFIGS, NotShipped, shipped_file

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# the top-level keys DeepSpeed 0.19 reads (its runtime config and the sections it hands to its
# monitors, profilers, compression and elasticity); DeepSpeed ignores any other key without a word, so a
# misspelt one would leave its setting silently unapplied
DEEPSPEED_KEYS = frozenset(
    [
        "activation_checkpointing",
        "aio",
        "amp",
        "autotuning",
        "bf16",
        "bfloat16",
        "checkpoint",
        "comet",
        "comms_logger",
        "communication_data_type",
        "compile",
        "compression_training",
        "csv_monitor",
        "curriculum_learning",
        "data_efficiency",
        "data_types",
        "dataloader_drop_last",
        "datastates_ckpt",
        "disable_allgather",
        "disable_python_gc",
        "dump_state",
        "dynamic_batching",
        "eigenvalue",
        "elasticity",
        "expert_parallel",
        "flops_profiler",
        "fp16",
        "gradient_accumulation_steps",
        "gradient_allreduce_op",
        "gradient_clipping",
        "gradient_predivide_factor",
        "graph_harvesting",
        "hybrid_engine",
        "log_level",
        "managed_gradient_accumulation",
        "memory_breakdown",
        "model_info",
        "nebula",
        "optimizer",
        "pipeline",
        "prescale_gradients",
        "progressive_layer_drop",
        "quantize_training",
        "random_ltd",
        "scheduler",
        "seq_parallel_communication_data_type",
        "sequence_parallel_size",
        "sparse_attention",
        "sparse_gradients",
        "steps_per_print",
        "tensor_parallel",
        "tensorboard",
        "timers",
        "torch_autocast",
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "use_data_before_expert_parallelism",
        "wall_clock_breakdown",
        "wandb",
        "weight_quantization",
        "zero_allow_untested_optimizer",
        "zero_force_ds_cpu_optimizer",
        "zero_optimization",
    ]
)
ACCELERATE_PRECISION = "ACCELERATE_MIXED_PRECISION"
_FROM_ACCELERATE = {"fp16": "fp16", "bf16": "bf16"}  # "no": accelerate's default, no request
# keys Hugging Face's templates set to "auto" and derive from the model's hidden size h
HIDDEN_SIZE_KEYS = {
    "zero_optimization.reduce_bucket_size": lambda h: h * h,
    "zero_optimization.stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "zero_optimization.stage3_param_persistence_threshold": lambda h: 10 * h,
}
# fp16: dynamic loss scaling as DeepSpeed recommends (start at 2**16, halve on overflow, grow every 1000)
FP16_SECTION = {
    "enabled": True,
    "loss_scale": 0,
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
}


def ds_config_path(train: TrainConfig) -> Path | Traversable:
    """``train.ds_config`` as a file path or a shipped name (``lottery/ds_configs/``); empty = ``zero<stage>``.

    A ``.json`` name that is a file is the user's own layout; anything else is looked up among the
    layouts shipped inside the package (lottery.resources), so ``zero3_offload`` works from any
    working directory and from an installed wheel, which has no repository around it.
    """
    name = train.ds_config or f"zero{train.zero_stage}"
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return path
    try:
        return shipped_file(DS_CONFIGS, name, ".json")
    except NotShipped as err:
        raise ConfigError(
            f"train.ds_config={name!r}: no such file and not one of the shipped layouts {err.known}"
        ) from None


def read_ds_json(train: TrainConfig) -> tuple[Path | Traversable, dict[str, Any]]:
    """The layout file of `train` and its content (less its ``_comment``)."""
    path = ds_config_path(train)
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read ({err})") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"{path}: a DeepSpeed config is a JSON object, got {type(ds).__name__}")
    ds.pop("_comment", None)
    return path, ds


def requested_precision(
    train: TrainConfig, ds: Mapping[str, Any], path: object, env: Mapping[str, str] = os.environ
) -> tuple[str, str]:
    """(the precision to resolve on the device, who asked for it): ``train.precision``, or under
    ``auto`` what the JSON or accelerate asks for. Refuses requests that disagree, naming both."""
    asked = {}
    from_json = _json_precision(ds, path)
    if from_json is not None:
        asked[f"{path} ({from_json[1]})"] = from_json[0]
    accelerate = env.get(ACCELERATE_PRECISION, "no")
    if accelerate != "no":
        if accelerate not in _FROM_ACCELERATE:
            raise ConfigError(
                f"{ACCELERATE_PRECISION}={accelerate} (accelerate launch --mixed_precision): lottery trains "
                f"in {', '.join(_FROM_ACCELERATE)} or fp32; pass --mixed_precision no and set train.precision"
            )
        asked[f"{ACCELERATE_PRECISION}={accelerate}"] = _FROM_ACCELERATE[accelerate]
    if train.precision != "auto":
        for source, precision in asked.items():
            if precision != train.precision:
                raise ConfigError(
                    f"train.precision={train.precision} but {source} asks for {precision}; make them agree"
                )
        return train.precision, "train.precision"
    (first, wanted), *others = list(asked.items()) or [("train.precision", "auto")]
    for source, precision in others:
        if precision != wanted:
            raise ConfigError(f"{first} asks for {wanted} but {source} asks for {precision}; make them agree")
    return wanted, first


def _json_precision(ds: Mapping[str, Any], path: object) -> tuple[str, str] | None:
    """What the JSON asks for (precision, the key that says so), or None: no ``enabled`` given."""
    enabled = {
        name: ds[name]["enabled"]
        for name in ("bf16", "fp16")
        if isinstance(ds.get(name), dict) and ds[name].get("enabled", "auto") != "auto"
    }
    on = [name for name, value in enabled.items() if value is True]
    if len(on) > 1:
        raise ConfigError(f"{path}: bf16.enabled and fp16.enabled are both true; enable one at most")
    if on:
        return on[0], f"{on[0]}.enabled=true"
    if enabled:
        return "fp32", " and ".join(f"{name}.enabled=false" for name in enabled)
    return None


def fill_ds_config(
    ds: dict[str, Any],
    path: object,
    train: TrainConfig,
    optim: OptimConfig,
    precision: str | None,
    *,
    world: int | None = None,
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """`ds` with the run config's values filled in (in place), or a `ConfigError` naming a conflict.

    `precision` (resolved, or None: leave the precision sections), `world` (ranks: ``train_batch_size``)
    and `hidden_size` (the bucket sizes) are given when known; what is unknown is left to check later.
    """
    _check_keys(ds, path)
    for section, owner in (("optimizer", "optim.* (AdamW)"), ("scheduler", "optim.warmup_steps")):
        if section in ds:
            raise ConfigError(
                f'{path}: "{section}" is set by the run config ({owner}); remove it from the JSON'
            )
    decided: dict[str, tuple[str, Any]] = {
        "train_micro_batch_size_per_gpu": ("train.batch_size", train.batch_size),
        "gradient_accumulation_steps": ("train.grad_accum", train.grad_accum),
        "gradient_clipping": ("optim.grad_clip", optim.grad_clip),
    }
    if world is not None:
        total = train.batch_size * train.grad_accum * world
        decided["train_batch_size"] = (f"train.batch_size x train.grad_accum x {world} rank(s)", total)
    if hidden_size is not None:
        for key, rule in HIDDEN_SIZE_KEYS.items():
            if _get(ds, key) == "auto":
                decided[key] = (f"the model's hidden size {hidden_size}", rule(hidden_size))
    for key, (name, value) in decided.items():
        _fill_match(ds, key, name, value, path)
    _fill_stage(ds, train.zero_stage, path)
    if precision is not None:
        bf16, fp16 = (_given(ds.get(name)) for name in ("bf16", "fp16"))  # the user's other settings stay
        ds["bf16"] = {**bf16, "enabled": precision == "bf16"}
        ds["fp16"] = {**FP16_SECTION, **fp16, "enabled": True} if precision == "fp16" else {"enabled": False}
    later = () if hidden_size is not None else tuple(HIDDEN_SIZE_KEYS)
    later += () if precision is not None else ("bf16.", "fp16.")
    unfilled = [key for key in _auto_keys(ds) if not key.startswith(later)]
    if unfilled:
        raise ConfigError(
            f'{path}: {unfilled[0]}="auto" is not a value lottery can fill (it fills batch sizes, accumulation, '
            "clipping, precision, the ZeRO stage and the ZeRO bucket sizes); give a value"
        )
    return ds


def check_ds_config(train: TrainConfig, optim: OptimConfig, env: Mapping[str, str] = os.environ) -> None:
    """Every check of `fill_ds_config` and `requested_precision` that needs no device, model or process
    group: run before any of them exists (`lottery.preflight`)."""
    path, ds = read_ds_json(train)
    requested_precision(train, ds, path, env)
    fill_ds_config(ds, path, train, optim, None)


def _check_keys(ds: Mapping[str, Any], path: object) -> None:
    unknown = sorted(key for key in ds if key not in DEEPSPEED_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(DEEPSPEED_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{path}: {unknown[0]!r} is not a DeepSpeed config key{hint}; DeepSpeed would ignore it without "
            "a word, so fix or remove it"
        )


def _get(ds: Mapping[str, Any], dotted: str) -> Any:
    node: Any = ds
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _given(section: Any) -> dict[str, Any]:
    return {k: v for k, v in section.items() if v != "auto"} if isinstance(section, dict) else {}


def _fill_stage(ds: dict[str, Any], stage: int, path: object) -> None:
    zero = ds.get("zero_optimization")
    given = zero.get("stage", 0) if isinstance(zero, dict) else 0  # DeepSpeed's default: stage 0
    if given == "auto":
        zero["stage"] = stage
    elif given != stage:
        raise ConfigError(
            f'{path} sets ZeRO stage {given} but train.zero_stage={stage}; make them agree, or write "auto"'
        )


def _fill_match(ds: dict[str, Any], dotted: str, name: str, value: Any, path: object) -> None:
    *parents, leaf = dotted.split(".")
    node = ds
    for part in parents:
        node = node.setdefault(part, {})
    current = node.get(leaf)
    if current is None or current == "auto":
        node[leaf] = value
    elif current != value:
        raise ConfigError(
            f'{path}: {dotted}={json.dumps(current)} but {name}={value}; make them agree, or write "auto" '
            "in the JSON to take the run config's value"
        )


def _auto_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, Mapping):
        return [key for k, v in node.items() for key in _auto_keys(v, f"{prefix}{k}.")]
    return [prefix[:-1]] if node == "auto" else []
