"""Which kind of run a config file describes, and the configs of the stages it names.

A YAML file does not say what it is: ``finetune-vqa.yaml`` holds only an ``optim`` section, which a
pre-training or IMP config could hold too. `detect_kind` takes the kind whose keys the file (and its
overrides) fit, and when several fit, the one its name starts with (``finetune-...``); failing both,
it asks for ``--kind``. `stages` resolves what a config names by name: the theta0 a fine-tune or IMP
run starts from, the IMP run and the per-task fine-tunes of a pipeline or study. ``lottery config show
--stages`` prints them, and `lottery.preflight` loads them before a job starts, so a bad key in a
nested override list is found before anything trains.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from lottery.config import (
    ConfigError,
    FinetuneConfig,
    ImpConfig,
    PipelineConfig,
    PretrainConfig,
    config_path,
    load_config,
    parse_override,
)
from lottery.config_loader import read_yaml
from lottery.study.config import ReproduceConfig
from lottery.train.finetune_configs import task_config, task_of

KINDS: dict[str, type] = {
    "pretrain": PretrainConfig,
    "imp": ImpConfig,
    "finetune": FinetuneConfig,
    "pipeline": PipelineConfig,
    "reproduce": ReproduceConfig,
}
STUDY_PLACEHOLDER = Path("OUT")  # a study's paths before its --out is known


def detect_kind(name: str, overrides: list[str]) -> str:
    """The kind (a key of `KINDS`) of the config `name` (a shipped name or a YAML path) + `overrides`."""
    keys = set(read_yaml(config_path(name))) | {parse_override(o)[0].split(".")[0] for o in overrides}
    fits = [kind for kind, cls in KINDS.items() if keys <= {f.name for f in fields(cls)}]
    named = next((kind for kind in KINDS if Path(name).stem.startswith(kind)), None)
    if len(fits) == 1:
        return fits[0]
    if named is not None and (named in fits or not fits):
        return named  # with no fit, the loader names the key that does not belong
    if not fits:
        raise ConfigError(f"{name}: its keys {sorted(keys)} fit no kind of config; pass --kind")
    raise ConfigError(f"{name}: could be a {' or '.join(fits)} config; pass --kind {'|'.join(fits)}")


def load_kind(kind: str, name: str, overrides: list[str]) -> Any:
    """The config as the job of that kind reads it (a shipped ``finetune-<task>`` sets its task)."""
    task = task_of(name) if kind == "finetune" else None
    if task is not None:
        return task_config(task, name, overrides)
    return load_config(name, overrides, cls=KINDS[kind])


def stages(config: Any, out: Path = STUDY_PLACEHOLDER) -> list[tuple[str, Any]]:
    """(title, config) of every stage `config` names, in the order the job runs them; a stage two
    others share (the theta0 of a study's IMP runs) once.

    `out`: a study's directory (``lottery reproduce --out``), which its stages' paths are under.
    """
    found: list[tuple[str, Any]] = []
    if isinstance(config, FinetuneConfig):
        found = [_theta0(config.theta0, config.theta0_overrides)]
    elif isinstance(config, ImpConfig):
        found = _imp("IMP", config, itself=False)
    elif isinstance(config, PipelineConfig):
        from lottery.train.pipeline import finetune_jobs, imp_config

        imp = imp_config(config)
        found = [*_imp(f"IMP {config.imp}", imp), *_per_task(finetune_jobs(config, imp))]
    elif isinstance(config, ReproduceConfig):
        from lottery.study import plan

        for source in plan.imp_sources(config):
            found += _imp(f"IMP {source}", plan.imp_config(config, out, source))
        found += _per_task(plan.finetune_jobs(config, out, plan.read_choices(out)))
    return list({title: (title, stage) for title, stage in found}.values())


def _theta0(name: str, overrides: tuple[str, ...]) -> tuple[str, PretrainConfig]:
    return f"theta0: {name} {list(overrides)}", load_config(name, list(overrides))


def _imp(title: str, config: ImpConfig, itself: bool = True) -> list[tuple[str, Any]]:
    """The theta0 an IMP run starts from, the run itself, and a downstream objective's fine-tune."""
    found = [_theta0(config.theta0, config.theta0_overrides), *([(title, config)] if itself else [])]
    objective = config.imp.objective
    if objective != "pretrain":
        task = task_config(objective, None, list(config.imp.task_overrides))
        found.append(
            (f"{title}: a round's fine-tune on {objective} (each round sets ticket and train)", task)
        )
    return found


def _per_task(jobs: list[FinetuneConfig]) -> list[tuple[str, Any]]:
    """One fine-tune per task (its first job), titled with the tickets and starts its jobs train."""
    first: dict[str, FinetuneConfig] = {}
    runs: dict[str, list[str]] = {}
    for job in jobs:
        first.setdefault(job.task, replace(job, ticket="dense", init="theta0"))
        runs.setdefault(job.task, [])
        label = job.ticket if job.init == "theta0" else f"{job.ticket} on {job.init}"
        if label not in runs[job.task]:
            runs[job.task].append(label)
    return [(f"fine-tune {task}: {', '.join(runs[task])}", job) for task, job in first.items()]
