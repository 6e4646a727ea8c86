"""One adapter per model family, so the training jobs name a family instead of importing a model.

A family says how to build its embedded default from a BERT, load and write a model directory, which
region inputs a directory reads, which parameters a ticket may prune, and which pre-training tasks it
has. A model directory says its own family: config.json's `model_type` (a UNITER directory written
before model types existed has none, and is UNITER). Modules load on first use, so the command line
parses without torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILY_NAMES = ("uniter", "lxmert")


@dataclass(frozen=True)
class Family:
    name: str
    default_dir: str  # the embedded default built from MiniLM
    load: Callable[[Path], Any]  # model directory -> the pre-training model
    skeleton: Callable[[Path], Any]  # model directory -> the pre-training model from config.json alone
    write: Callable[[Any, Path, Mapping[str, Path]], None]  # fill a partial directory (atomic_directory)
    build: Callable[[str, Path, int, int], Path]  # (bert, out, img_dim, classes) -> out, written whole
    input_sizes: Callable[[Path], tuple[int, int]]  # model directory -> (feature size, detector classes)
    scope: Callable[[], tuple[str, ...]]  # the default prunable scope
    tasks: Callable[[], dict[str, Any]]  # name -> PretrainTask
    finetune_tasks: tuple[str, ...]  # the downstream tasks it has a head for
    task_model: Callable[
        [Path, str, int | None], Any
    ]  # (a model directory, task, outputs) -> fresh task model
    save_finetuned: Callable[..., Path]  # (state, config, TaskHead, partial, extra_files): a fine-tuned dir


def _uniter_build(bert: str, out: Path, img_dim: int, classes: int) -> Path:
    from lottery.models.uniter import MINILM, init_from_bert, save_pretrained, tokenizer_files

    model, report = init_from_bert(
        Path(bert) if bert != MINILM else bert, img_dim=img_dim, num_region_classes=classes
    )
    _log(report.summary())
    return save_pretrained(model, out, extra_files=tokenizer_files(report.source))


def _uniter_sizes(model_dir: Path) -> tuple[int, int]:
    from lottery.models.uniter import load_config

    config = load_config(model_dir)
    return config.img_dim, config.num_region_classes


def _uniter_write(model, directory: Path, extra_files: Mapping[str, Path]) -> None:
    from lottery.models.uniter.checkpoint import write_model_files

    write_model_files(model, directory, extra_files)


def _uniter_load(model_dir: Path):
    from lottery.models.uniter import from_pretrained

    return from_pretrained(model_dir)


def _uniter_skeleton(model_dir: Path):
    from lottery.models.uniter import UniterForPretraining, load_config

    return UniterForPretraining(load_config(model_dir))


def _lxmert_skeleton(model_dir: Path):
    from lottery.models.lxmert import LxmertForLotteryPretraining, load_config

    return LxmertForLotteryPretraining(load_config(model_dir))


def _uniter_scope() -> tuple[str, ...]:
    from lottery.sparsity.scope import DEFAULT_SCOPE

    return DEFAULT_SCOPE


def _uniter_tasks() -> dict[str, Any]:
    from lottery.tasks.pretrain import TASKS

    return TASKS


def _uniter_task_model(model_dir: Path, task: str, num_outputs: int | None):
    from lottery.models.uniter import load_config
    from lottery.tasks.downstream.model import UniterForTask

    return UniterForTask(load_config(model_dir), task, num_outputs=num_outputs)


def _uniter_save_finetuned(*args, **kwargs) -> Path:
    from lottery.models.uniter import save_finetuned

    return save_finetuned(*args, **kwargs)


def _lxmert_task_model(model_dir: Path, task: str, num_outputs: int | None):
    from lottery.models.lxmert import load_config
    from lottery.models.lxmert.task_model import LxmertForTask

    return LxmertForTask(load_config(model_dir), task, num_outputs=num_outputs)


def _lxmert_save_finetuned(*args, **kwargs) -> Path:
    from lottery.models.lxmert.finetuned import save_finetuned

    return save_finetuned(*args, **kwargs)


def _lxmert_build(bert: str, out: Path, img_dim: int, classes: int) -> Path:
    from lottery.models.lxmert import init_from_bert, save_pretrained
    from lottery.models.uniter import tokenizer_files

    model, report = init_from_bert(bert, img_dim=img_dim, num_region_classes=classes)
    _log(report.summary())
    return save_pretrained(model, out, extra_files=tokenizer_files(report.source))


def _lxmert_load(model_dir: Path):
    from lottery.models.lxmert import from_pretrained

    return from_pretrained(model_dir)


def _lxmert_write(model, directory: Path, extra_files: Mapping[str, Path]) -> None:
    from lottery.models.lxmert import write_model_files

    write_model_files(model, directory, extra_files)


def _lxmert_sizes(model_dir: Path) -> tuple[int, int]:
    from lottery.models.lxmert import input_sizes

    return input_sizes(model_dir)


def _lxmert_scope() -> tuple[str, ...]:
    from lottery.models.lxmert import LXMERT_SCOPE

    return LXMERT_SCOPE


def _lxmert_tasks() -> dict[str, Any]:
    from lottery.tasks.lxmert_pretrain import LXMERT_TASKS

    return LXMERT_TASKS


def _log(message: str) -> None:
    import logging

    logging.getLogger("lottery.models").info(message)


FAMILIES: dict[str, Family] = {
    "uniter": Family(
        name="uniter",
        default_dir="models/uniter-mini",
        load=_uniter_load,
        skeleton=_uniter_skeleton,
        write=_uniter_write,
        build=_uniter_build,
        input_sizes=_uniter_sizes,
        scope=_uniter_scope,
        tasks=_uniter_tasks,
        finetune_tasks=("vqa", "gqa", "snli-ve", "vcr", "retrieval", "refcoco+", "nlvr2"),
        task_model=_uniter_task_model,
        save_finetuned=_uniter_save_finetuned,
    ),
    "lxmert": Family(
        name="lxmert",
        default_dir="models/lxmert-mini",
        load=_lxmert_load,
        skeleton=_lxmert_skeleton,
        write=_lxmert_write,
        build=_lxmert_build,
        input_sizes=_lxmert_sizes,
        scope=_lxmert_scope,
        tasks=_lxmert_tasks,
        finetune_tasks=("vqa", "gqa", "nlvr2"),  # the paper's LXMERT tasks (models/lxmert/task_model.py)
        task_model=_lxmert_task_model,
        save_finetuned=_lxmert_save_finetuned,
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
