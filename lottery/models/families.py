"""One adapter per model family, so the training jobs name a family instead of importing a model.

A family says how to build its embedded default from a BERT, load and write a model directory, which
region inputs a directory reads (or, for a patch model, the patch grid its images are cut into), which
parameters a ticket may prune, and which pre-training tasks it has. A model directory says its own
family: config.json's `model_type` (a UNITER directory written before model types existed has none,
and is UNITER). Each adapter names the functions of its family's modules, imported on first use, so
the command line parses without torch.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILY_NAMES = ("uniter", "lxmert", "vilt")


@dataclass(frozen=True)
class Family:
    name: str
    default_dir: str  # the embedded default built from MiniLM
    load: Callable[[Path], Any]  # model directory -> the pre-training model
    skeleton: Callable[[Path], Any]  # model directory -> the pre-training model from config.json alone
    write: Callable[[Any, Path, Mapping[str, Path]], None]  # fill a partial directory (atomic_directory)
    build: Callable[[str, Path, int, int], Path]  # (bert, out, img_dim | image side, classes) -> out
    input_sizes: Callable[[Path], tuple[int, int]]  # model directory -> (feature size, detector classes)
    scope: Callable[[], tuple[str, ...]]  # the default prunable scope
    tasks: Callable[[], dict[str, Any]]  # name -> PretrainTask
    finetune_tasks: tuple[str, ...]  # the downstream tasks it has a head for
    task_model: Callable[[Path, str, int | None], Any]  # (model directory, task, outputs) -> task model
    save_finetuned: Callable[..., Path]  # (state, config, TaskHead, partial, extra_files): a fine-tuned dir
    load_finetuned: Callable[[Path], Any]  # a fine-tuned directory -> its task model
    # model directory -> the PatchGrid a patch model reads its images as (None: it reads region features)
    patch_grid: Callable[[Path], Any] = lambda model_dir: None


def _call(target: str) -> Callable[..., Any]:
    """`module:function` as a function that imports the module on its first call (the CLI parses without torch)."""
    module, name = target.split(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _value(target: str) -> Callable[[], Any]:
    """`module:name` as a function returning that module-level value, imported on first use."""
    module, name = target.split(":")
    return lambda: getattr(importlib.import_module(module), name)


def _built(package: str, patch_model: bool = False) -> Callable[[str, Path, int, int], Path]:
    """The `build` of the family in `package` (its `init_from_bert` and `save_pretrained`): the model,
    its report logged, written with the BERT's tokenizer files. A patch model takes the data's image
    side where a region model takes its feature size and detector classes."""

    def build(bert: str, out: Path, size: int, classes: int) -> Path:
        from lottery.models.uniter import MINILM, tokenizer_files

        module = importlib.import_module(package)
        source = bert if bert == MINILM else Path(bert)
        if patch_model:
            model, report = module.init_from_bert(source, image_size=size)
        else:
            model, report = module.init_from_bert(source, img_dim=size, num_region_classes=classes)
        logging.getLogger("lottery.models").info(report.summary())
        return module.save_pretrained(model, out, extra_files=tokenizer_files(report.source))

    return build


FAMILIES: dict[str, Family] = {
    "uniter": Family(
        name="uniter",
        default_dir="models/uniter-mini",
        load=_call("lottery.models.uniter:from_pretrained"),
        skeleton=_call("lottery.models.uniter.checkpoint:skeleton"),
        write=_call("lottery.models.uniter.checkpoint:write_model_files"),
        build=_built("lottery.models.uniter"),
        input_sizes=_call("lottery.models.uniter.checkpoint:input_sizes"),
        scope=_value("lottery.sparsity.scope:DEFAULT_SCOPE"),
        tasks=_value("lottery.tasks.pretrain:TASKS"),
        finetune_tasks=("vqa", "gqa", "snli-ve", "vcr", "retrieval", "refcoco+", "nlvr2"),
        task_model=_call("lottery.tasks.downstream.model:task_model"),
        save_finetuned=_call("lottery.models.uniter:save_finetuned"),
        load_finetuned=_call("lottery.models.uniter:from_finetuned"),
    ),
    "lxmert": Family(
        name="lxmert",
        default_dir="models/lxmert-mini",
        load=_call("lottery.models.lxmert:from_pretrained"),
        skeleton=_call("lottery.models.lxmert.checkpoint:skeleton"),
        write=_call("lottery.models.lxmert:write_model_files"),
        build=_built("lottery.models.lxmert"),
        input_sizes=_call("lottery.models.lxmert:input_sizes"),
        scope=_value("lottery.models.lxmert:LXMERT_SCOPE"),
        tasks=_value("lottery.tasks.lxmert_pretrain:LXMERT_TASKS"),
        finetune_tasks=("vqa", "gqa", "nlvr2"),  # the paper's LXMERT tasks (models/lxmert/task_model.py)
        task_model=_call("lottery.models.lxmert.task_model:task_model"),
        save_finetuned=_call("lottery.models.hf_finetuned:save_finetuned"),
        load_finetuned=_call("lottery.models.lxmert.finetuned:from_finetuned"),
    ),
    "vilt": Family(
        name="vilt",
        default_dir="models/vilt-mini",
        load=_call("lottery.models.vilt:from_pretrained"),
        skeleton=_call("lottery.models.vilt.checkpoint:skeleton"),
        write=_call("lottery.models.vilt:write_model_files"),
        build=_built("lottery.models.vilt", patch_model=True),
        input_sizes=_call("lottery.models.vilt:input_sizes"),
        scope=_value("lottery.models.vilt:VILT_SCOPE"),
        tasks=_value("lottery.tasks.vilt_pretrain:VILT_TASKS"),
        finetune_tasks=("vqa", "nlvr2"),  # the paper's ViLT tasks (models/vilt/task_model.py)
        task_model=_call("lottery.models.vilt.task_model:task_model"),
        save_finetuned=_call("lottery.models.hf_finetuned:save_finetuned"),
        load_finetuned=_call("lottery.models.vilt.finetuned:from_finetuned"),
        patch_grid=_call("lottery.models.vilt:model_grid"),
    ),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {list(FAMILIES)}")
    return FAMILIES[name]


def family_of(model_dir: str | Path) -> Family:
    """The family a model directory belongs to, read from its config.json (`ModelDirError` if none)."""
    from lottery.models.uniter.checkpoint import ModelDirError

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelDirError(f"{path} is missing: {model_dir} is not a model directory")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ModelDirError(f"{path}: not valid JSON: {err}") from err
    model_type = data.get("model_type", "uniter") if isinstance(data, dict) else None
    if model_type not in FAMILIES:
        raise ModelDirError(f"{path}: model_type {model_type!r} is none of the families {list(FAMILIES)}")
    return FAMILIES[model_type]
