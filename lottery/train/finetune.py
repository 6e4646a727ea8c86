"""``lottery finetune``: one downstream task from theta0 (or theta0' / theta0'') under a ticket.

Read top to bottom: the ticket's id (the alias resolved once, by rank 0, broadcast) -> theta0 (built
once, its criteria printed, its verdict recorded in the metrics) -> the task's data -> the family's task model
(UniterForTask, LxmertForTask) with the start's backbone and a fresh head -> DeepSpeed engine -> the ticket installed by that id (verified,
refused before any step if it was cut from another model) -> steps -> the task's metric on val ->
``metrics.json`` (and ``model/``, a fine-tuned model directory, unless ``save_model=false``).

Rank 0 alone reads theta0's verdict, writes the run's config.yaml and the tracker's points
(``train.report_to``), through ``dist.on_main`` (sites ``finetune.theta0_verdict``,
``finetune.config_yaml``, ``finetune.track``, ``finetune.metrics``); ``DONE`` follows metrics.json
(`run_record`). metrics.json also holds the training curve (``train_curve``: the loss every
``train.log_every`` steps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from lottery import dist
from lottery.config import ConfigError, FinetuneConfig, SparsityConfig, load_config, parse_override, to_dict
from lottery.data.examples import TASK_NAMES
from lottery.evaluation.chance import chance_metrics
from lottery.files import atomic_directory, write_json_atomic
from lottery.models.families import FAMILIES
from lottery.progress import progress_bar
from lottery.run_record import mark_done, run_digest, write_record
from lottery.tasks.downstream.common import TaskContext, pack_pairs
from lottery.tasks.downstream.registry import adapter
from lottery.train.batches import to_device
from lottery.train.starts import STARTS, start_state
from lottery.train.step import Preempted, RunHooks, StopRequest, due, optimizer_step
from lottery.train.trackers import Tracker

log = logging.getLogger("lottery.train.finetune")

if TYPE_CHECKING:
    from lottery.train.finetune_data import TaskData
    from lottery.train.theta0 import Theta0Verdict


# theta0 overrides that say how the job treats theta0, not which theta0 it is (`Theta0Options`)
_NOT_IDENTITY_OVERRIDES = ("theta0.require_criteria",)


def run_dir_for(config: FinetuneConfig) -> Path:
    """`runs_dir/<task>-<ticket>-<init>[-adv]-<digest>`: the digest of what decides the results."""
    kept = tuple(o for o in config.theta0_overrides if parse_override(o)[0] not in _NOT_IDENTITY_OVERRIDES)
    identity = run_digest(replace(config, theta0_overrides=kept))[:10]
    # a resolved ticket is a 64-hex id: its first 12 digits name it, as `lottery ticket list` does
    ticket = config.ticket[:12] if len(config.ticket) == 64 else config.ticket.replace("/", "_")
    adversarial = "-adv" if config.adversarial.enabled else ""
    return Path(config.runs_dir) / f"{config.task}-{ticket}-{config.init}{adversarial}-{identity}"


def check_config(config: FinetuneConfig) -> None:
    if config.task not in TASK_NAMES:
        raise ConfigError(f"task: {config.task!r} is not one of {', '.join(TASK_NAMES)}")
    if config.init not in STARTS:
        raise ConfigError(f"init: {config.init!r} is not one of {', '.join(STARTS)}")
    family = load_config(config.theta0, list(config.theta0_overrides)).model.family
    tasks = FAMILIES[family].finetune_tasks
    if config.task not in tasks:
        raise ConfigError(
            f"task: {family} ({config.theta0}) has no {config.task} head; its tasks are {', '.join(tasks)}"
        )
    if config.adversarial.enabled and family != "uniter":
        raise ConfigError(
            f"adversarial.enabled: VILLA perturbs UNITER's embeddings; {family} has no such path"
        )


class _Predict:
    """Lets predictions go through the engine's forward (one module call, as ZeRO-3 needs)."""

    def __init__(self, task_adapter, ctx: TaskContext) -> None:
        self.task_adapter, self.ctx = task_adapter, ctx

    def loss(self, model, batch):
        return self.task_adapter.predict(model, batch, self.ctx), {}


@torch.no_grad()
def evaluate(
    engine, task: str, examples: list, ctx: TaskContext, batch_size: int, dtype: torch.dtype
) -> dict[str, float]:
    """The task's metric on `examples` (collective: each rank predicts an equal share, gathered)."""
    task_adapter = adapter(task)
    engine.eval()
    world, rank = dist.world_size(), dist.rank()
    if task == "retrieval":
        images, grid, caption_image = task_adapter.pairs(examples)
        items = grid
    else:
        items = list(range(len(examples)))
    per_rank = -(-len(items) // world)
    mine = [items[min(i, len(items) - 1)] for i in range(rank * per_rank, (rank + 1) * per_rank)]
    predictions = []
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        if task == "retrieval":
            ids = [ctx.ids(examples[c].text) for c, _ in chunk]
            batch = pack_pairs(ctx, ids, [images[i] for _, i in chunk])
        else:
            batch = task_adapter.collate([examples[i] for i in chunk], ctx, torch.Generator().manual_seed(0))
        predicted, _ = engine(to_device(batch, engine.device, dtype), _Predict(task_adapter, ctx))
        predictions += predicted
    gathered = [p for part in dist.gather_objects(predictions) for p in part][: len(items)]
    engine.train()
    if task == "retrieval":
        matrix = torch.tensor(gathered).view(len(examples), len(images))
        return task_adapter.metric_from_scores(matrix, caption_image)
    return task_adapter.metric(gathered, examples)


@dataclass
class _Setup:
    """Everything the steps need, built in the order that fixes the fresh head's seed."""

    theta0_model: Path
    bert_model: Path
    data: TaskData
    ctx: TaskContext
    model: Any  # the family's task model
    engine: Any
    precision: str
    dtype: torch.dtype
    sparsity: SparsityConfig
    enforcer: Any
    verdict: Theta0Verdict | None
    family: str  # model.family of theta0's config


def finetune(
    config: FinetuneConfig,
    keep_process_group: bool = False,
    run_dir: Path | None = None,
    hooks: RunHooks | None = None,
) -> dict:
    """Run one fine-tune to its end; returns what metrics.json holds. Collective.

    The process group is shut down at the end unless `keep_process_group` (a sweep goes on). `run_dir`
    replaces the directory named by the config, and `hooks` let a caller drive the run as it drives a
    pre-training (IMP on a downstream objective: check the start, stop early, prune at the end). The
    run directory is held for the job (`run_lock`): a second identical job is refused, naming this one.
    """
    from lottery.run_lock import holding

    check_config(config)
    dist.init()
    out = run_dir or run_dir_for(config)
    with holding(out):
        return _finetune(config, keep_process_group, out, hooks)


def _finetune(config: FinetuneConfig, keep_process_group: bool, out: Path, hooks: RunHooks | None) -> dict:
    from lottery.train.ticketed import verify_now

    launch = dist.init()
    hooks = hooks or RunHooks()
    # the alias is resolved once, here: an alias moved while this job runs must not change what it trained
    ticket = resolve_ticket(config)
    run = _setup(config, ticket, out, launch.world_size)
    # recorded once the job is accepted: a refused theta0 or ticket leaves no run directory behind
    dist.on_main(lambda: write_record(out, config), what="finetune.config_yaml")
    if hooks.on_start is not None:
        hooks.on_start(run.engine)
    began = time.perf_counter()
    history, curve, steps = _train(config, run, hooks)
    final = evaluate(run.engine, config.task, run.data.val, run.ctx, config.train.batch_size, run.dtype)
    tracker = Tracker(run.engine)
    dist.on_main(lambda: tracker.log({"step": steps, **final}, "val"), what="finetune.track")
    result = {
        "task": config.task,
        "metrics": final,
        "chance": chance_metrics(config.task, run.data.train, run.data.val, run.ctx),
        "history": history,
        "train_curve": curve,
        "ticket": config.ticket,
        "ticket_meta": None if ticket is None else ticket.meta,
        "sparsity": 0.0 if run.enforcer is None else run.enforcer.masks.sparsity,
        "init": config.init,
        "adversarial": config.adversarial.enabled,
        "world_size": dist.world_size(),
        "family": run.family,
        "precision": run.precision,
        "steps": steps,
        "optimizer_steps": int(run.engine.global_steps),  # = steps: DeepSpeed counts accumulation boundaries
        "grad_accum": config.train.grad_accum,
        "train_examples": len(run.data.train),
        "val_examples": len(run.data.val),
        "seconds": round(time.perf_counter() - began, 1),
        "theta0_dir": str(run.theta0_model.parent),
        # None: theta0's family has no grounding criteria (they probe UNITER), so nothing was measured
        "theta0_passed": None if run.verdict is None else run.verdict.passed,
        "theta0_failed": [] if run.verdict is None else list(run.verdict.failed),
        "config": to_dict(config),
    }
    verify_now(run.enforcer, f"at the end of the fine-tune (step {steps})")
    if hooks.on_done is not None:
        hooks.on_done(run.engine)
    if config.save_model and hooks.save_model:
        _save_model(run, config, out)
    dist.on_main(lambda: _record_result(out, config, result, hooks.mark_done), what="finetune.metrics")
    if not keep_process_group:
        dist.shutdown()
    return result


def _record_result(out: Path, config: FinetuneConfig, result: dict, done: bool) -> None:
    """metrics.json, then ``DONE`` (rank 0): a job killed between them is redone, never half-recorded."""
    write_json_atomic(out / "metrics.json", result)
    if done:
        mark_done(out, run_digest(config))
    line = " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
    log.info(f"{config.task} val: {line}  ({out / 'metrics.json'})")


@dataclass(frozen=True)
class ResolvedTicket:
    """The ticket a fine-tune trains under, read once: its full id and where it came from."""

    id: str
    meta: dict


def resolve_ticket(config: FinetuneConfig) -> ResolvedTicket | None:
    """The configured ticket's id and provenance, read by rank 0 and broadcast (collective); None: dense.

    Everything after uses this id, never the alias again: the engine installs the ticket by id, and
    metrics.json names it, so a re-published alias cannot make the record name another ticket.
    """
    if config.ticket in ("dense", ""):
        return None
    from lottery.tickets import default_root
    from lottery.tickets.distributed import load_broadcast

    ticket = load_broadcast(
        config.store or default_root(), config.ticket, expect_fingerprint=None, expect_scope=None
    )
    meta = ticket.meta
    return ResolvedTicket(
        ticket.id,
        {"id": ticket.id, "method": meta.method, "tasks": list(meta.tasks), "imp_round": meta.imp_round},
    )


def _setup(config: FinetuneConfig, ticket: ResolvedTicket | None, out: Path, world: int) -> _Setup:
    """theta0 (built once, its verdict read), the task's data, the model from the start, engine, ticket."""
    from lottery.models.uniter.checkpoint import load_tokenizer
    from lottery.train.assets import ensure_data, ensure_model
    from lottery.train.engine import build_engine, working_dtype
    from lottery.train.finetune_data import prepare_task_data
    from lottery.train.theta0 import MEASURED_FAMILY, ensure_theta0, read_verdict
    from lottery.train.ticketed import attach_ticket

    theta0_config = load_config(config.theta0, list(config.theta0_overrides))
    theta0_model = ensure_theta0(theta0_config)
    if theta0_model is None:
        raise RuntimeError("theta0 stopped before its last step; run `lottery theta0` to finish it")
    verdict = (
        dist.on_main(lambda: read_verdict(theta0_model.parent), what="finetune.theta0_verdict")
        if theta0_config.model.family == MEASURED_FAMILY
        else None
    )
    scenes_dir = ensure_data(theta0_config.data)
    bert_model = ensure_model(theta0_config.model, scenes_dir)
    tokenizer = load_tokenizer(bert_model)
    family = FAMILIES[theta0_config.model.family]
    data = prepare_task_data(
        config.task, scenes_dir, bert_model, config.data, family.patch_grid(theta0_model)
    )
    ctx = TaskContext(
        lambda text: tokenizer(text)["input_ids"],
        data.features,
        answers=data.answers,
        negatives=config.data.negatives,
    )
    if dist.is_main():
        named = "" if ticket is None or ticket.id == config.ticket else f" (= {ticket.id[:12]})"
        log.info(
            f"lottery finetune {config.task}: {world} rank(s), ticket {config.ticket}{named}, start "
            f"{config.init}, {len(data.train)} train / {len(data.val)} val examples -> {out}"
        )
    torch.manual_seed(config.train.seed)  # the fresh head: the same in every run of this config
    model = family.task_model(theta0_model, config.task, len(data.answers) or None)
    state = start_state(config.init, theta0_model, bert_model, config.init_seed)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not name.startswith("head.") for name in missing):
        raise ValueError(
            f"start {config.init}: weights do not fit the task model ({unexpected[:3]} {missing[:3]})"
        )
    engine, precision = build_engine(model, config.train, config.optim, out)
    sparsity = SparsityConfig(
        ticket="" if ticket is None else ticket.id,
        store=config.store,
        scope=config.scope,
        verify_every=config.verify_every,
    )
    enforcer = attach_ticket(engine, sparsity)
    return _Setup(
        theta0_model,
        bert_model,
        data,
        ctx,
        model,
        engine,
        precision,
        working_dtype(precision),
        sparsity,
        enforcer,
        verdict,
        family.name,
    )


def _train(config: FinetuneConfig, run: _Setup, hooks: RunHooks) -> tuple[list[dict], list[dict], int]:
    """The steps (with the ticket kept and checked) and the periodic validations; (val history, training
    curve: the loss every `train.log_every` steps, last step). Both also go to the tracker, if any."""
    from lottery.train.ticketed import check_every

    task_adapter = adapter(config.task)
    objective = task_adapter
    if config.adversarial.enabled:
        from lottery.tasks.downstream.adversarial import AdversarialLoss

        objective = AdversarialLoss(task_adapter, config.adversarial)
    train, engine, data, ctx, enforcer = config.train, run.engine, run.data, run.ctx, run.enforcer
    world, rank = dist.world_size(), dist.rank()
    per_micro = train.batch_size * world  # examples one micro-step takes over all ranks
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(train.seed)).tolist()

    def micro_batches(step: int) -> Iterator[tuple[dict, object]]:
        """The step's `grad_accum` micro-batches, walking the shuffled train set (wrapping around)."""
        for micro in range(train.grad_accum):
            index = (step - 1) * train.grad_accum + micro  # 0-based micro-step
            start = (index * per_micro) % max(1, len(order) - per_micro + 1)
            chunk = order[start + rank * train.batch_size : start + (rank + 1) * train.batch_size]
            generator = torch.Generator().manual_seed(train.seed * 1_000_003 + (index + 1) * 101 + rank)
            yield task_adapter.collate([data.train[i] for i in chunk], ctx, generator), objective

    history: list[dict] = []
    curve: list[dict] = []
    tracker = Tracker(engine)
    main = dist.is_main()
    progress = progress_bar(total=train.steps, enabled=main, desc=f"finetune {config.task}")
    engine.train()
    steps = hooks.end_step or train.steps
    with StopRequest() as stop:
        for step in range(1, steps + 1):
            named = optimizer_step(engine, enforcer, micro_batches(step), run.dtype, step=step)
            signalled = stop.agreed(step, named)  # raises on a non-finite loss, on every rank
            check_every(enforcer, run.sparsity, step)
            losses = [loss for _, loss in named]
            if signalled and step < steps:
                raise Preempted(step, signalled, resumable=False)
            if hooks.on_step is not None and hooks.on_step(engine, step):
                steps = step
                break
            progress.update(1)
            loss = sum(losses) / len(losses)
            progress.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if due(step, train.log_every, steps):
                curve.append({"step": step, "loss": loss, "lr": engine.get_lr()[0]})
                dist.on_main(lambda point=curve[-1]: tracker.log(point, "train"), what="finetune.track")
            if step != steps and due(step, train.val_every, steps):
                history.append(
                    {
                        "step": step,
                        **evaluate(engine, config.task, data.val, ctx, train.batch_size, run.dtype),
                    }
                )
                dist.on_main(lambda point=history[-1]: tracker.log(point, "val"), what="finetune.track")
                if main:
                    tqdm.write(f"step {step} val {history[-1]}")
    progress.close()
    return history, curve, steps


def _save_model(run: _Setup, config: FinetuneConfig, out: Path) -> None:
    """`out/model/`: a fine-tuned model directory (models/uniter/finetuned.py); written whole or not at all.

    Collective (the weights are gathered); rank 0 writes.
    """
    from lottery.models.uniter import TaskHead, tokenizer_files
    from lottery.train.weights import full_state_dict

    state = full_state_dict(run.engine)
    if not dist.is_main():
        return
    head = TaskHead(config.task, run.model.head[-1].out_features, tuple(run.data.answers))
    with atomic_directory(out / "model", replace=True) as partial:
        FAMILIES[run.family].save_finetuned(
            state, run.model.config, head, partial, tokenizer_files(run.bert_model)
        )
