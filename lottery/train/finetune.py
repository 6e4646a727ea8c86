"""``lottery finetune``: one downstream task from theta0 (or theta0' / theta0'') under a ticket.

Read top to bottom: theta0 (built once, its criteria printed) -> the task's data -> UniterForTask with
the start's backbone and a fresh head -> DeepSpeed engine -> the ticket (rank 0 reads and verifies it,
broadcast, refused before any step if it was cut from another model) -> steps -> the task's metric on
val -> ``metrics.json`` (and ``model/`` unless ``save_model=false``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from lottery import dist
from lottery.config import ConfigError, FinetuneConfig, SparsityConfig, load_config, to_dict
from lottery.files import write_json_atomic
from lottery.tasks.downstream.chance import chance_metrics
from lottery.tasks.downstream.common import TaskContext, pack_pairs
from lottery.tasks.downstream.examples import TASK_NAMES
from lottery.tasks.downstream.model import UniterForTask
from lottery.tasks.downstream.registry import adapter
from lottery.train.batches import to_device
from lottery.train.pretrain import RunHooks
from lottery.train.starts import STARTS, start_state


def run_dir_for(config: FinetuneConfig) -> Path:
    ident = replace(config, runs_dir="", save_model=True, verify_every=0)
    digest = hashlib.sha256(json.dumps(to_dict(ident), sort_keys=True).encode()).hexdigest()[:10]
    # a resolved ticket is a 64-hex id: its first 12 digits name it, as `lottery ticket list` does
    ticket = config.ticket[:12] if len(config.ticket) == 64 else config.ticket.replace("/", "_")
    adversarial = "-adv" if config.adversarial.enabled else ""
    return Path(config.runs_dir) / f"{config.task}-{ticket}-{config.init}{adversarial}-{digest}"


def check_config(config: FinetuneConfig) -> None:
    if config.task not in TASK_NAMES:
        raise ConfigError(f"task: {config.task!r} is not one of {', '.join(TASK_NAMES)}")
    if config.init not in STARTS:
        raise ConfigError(f"init: {config.init!r} is not one of {', '.join(STARTS)}")


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


def finetune(
    config: FinetuneConfig,
    keep_process_group: bool = False,
    run_dir: Path | None = None,
    hooks: RunHooks | None = None,
) -> dict:
    """Run one fine-tune to its end; returns what metrics.json holds. Collective.

    The process group is shut down at the end unless `keep_process_group` (a sweep goes on). `run_dir`
    replaces the directory named by the config, and `hooks` let a caller drive the run as it drives a
    pre-training (IMP on a downstream objective: check the start, stop early, prune at the end).
    """
    from lottery.models.uniter import load_config as load_model_config
    from lottery.train.assets import ensure_data, ensure_model, load_tokenizer
    from lottery.train.engine import build_engine, working_dtype
    from lottery.train.finetune_data import prepare_task_data
    from lottery.train.theta0 import ensure_theta0
    from lottery.train.ticketed import attach_ticket, check_every, verify_now

    check_config(config)
    launch = dist.init()
    main = dist.is_main()
    out = run_dir or run_dir_for(config)
    hooks = hooks or RunHooks()
    theta0_config = load_config(config.theta0, list(config.theta0_overrides))
    theta0_model = ensure_theta0(theta0_config)
    if theta0_model is None:
        raise RuntimeError("theta0 stopped before its last step; run `lottery theta0` to finish it")
    scenes_dir = ensure_data(theta0_config.data)
    bert_model = ensure_model(theta0_config.model, scenes_dir)
    tokenizer = load_tokenizer(bert_model)
    data = prepare_task_data(config.task, scenes_dir, bert_model, config.data)
    ctx = TaskContext(
        lambda text: tokenizer(text)["input_ids"],
        data.features,
        answers=data.answers,
        negatives=config.data.negatives,
    )
    if main:
        print(
            f"lottery finetune {config.task}: {launch.world_size} rank(s), ticket {config.ticket}, start "
            f"{config.init}, {len(data.train)} train / {len(data.val)} val examples -> {out}",
            flush=True,
        )
    torch.manual_seed(config.train.seed)  # the fresh head: the same in every run of this config
    model = UniterForTask(load_model_config(theta0_model), config.task, num_outputs=len(data.answers) or None)
    state = start_state(config.init, theta0_model, bert_model, config.init_seed)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not name.startswith("head.") for name in missing):
        raise ValueError(
            f"start {config.init}: weights do not fit the task model ({unexpected[:3]} {missing[:3]})"
        )
    engine, precision = build_engine(model, config.train, config.optim)
    dtype = working_dtype(precision)
    sparsity = SparsityConfig(
        ticket="" if config.ticket == "dense" else config.ticket,
        store=config.store,
        scope=config.scope,
        verify_every=config.verify_every,
    )
    enforcer = attach_ticket(engine, sparsity)
    if hooks.on_start is not None:
        hooks.on_start(engine)
    task_adapter = adapter(config.task)
    objective = task_adapter
    if config.adversarial.enabled:
        from lottery.tasks.downstream.adversarial import AdversarialLoss

        objective = AdversarialLoss(task_adapter, config.adversarial)
    train = config.train
    world, rank = dist.world_size(), dist.rank()
    per_step = train.batch_size * world
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(train.seed)).tolist()
    history = []
    progress = tqdm(total=train.steps, disable=not main, desc=f"finetune {config.task}", dynamic_ncols=True)
    began = time.perf_counter()
    engine.train()
    steps = hooks.end_step or train.steps
    for step in range(1, steps + 1):
        start = ((step - 1) * per_step) % max(1, len(order) - per_step + 1)
        chunk = order[start + rank * train.batch_size : start + (rank + 1) * train.batch_size]
        generator = torch.Generator().manual_seed(train.seed * 1_000_003 + step * 101 + rank)
        batch = task_adapter.collate([data.train[i] for i in chunk], ctx, generator)
        loss, _ = engine(to_device(batch, engine.device, dtype), objective)
        engine.backward(loss)
        if enforcer is not None:
            enforcer.before_step()
        engine.step()
        check_every(enforcer, sparsity, step)
        if hooks.on_step is not None and hooks.on_step(engine, step):
            steps = step
            break
        progress.update(1)
        progress.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        if train.val_every and step % train.val_every == 0 and step != steps:
            history.append(
                {"step": step, **evaluate(engine, config.task, data.val, ctx, train.batch_size, dtype)}
            )
            if main:
                tqdm.write(f"step {step} val {history[-1]}")
    progress.close()
    final = evaluate(engine, config.task, data.val, ctx, train.batch_size, dtype)
    result = {
        "task": config.task,
        "metrics": final,
        "chance": chance_metrics(config.task, data.train, data.val, ctx),
        "history": history,
        "ticket": config.ticket,
        "ticket_meta": None if enforcer is None else _ticket_meta(config),
        "sparsity": 0.0 if enforcer is None else enforcer.masks.sparsity,
        "init": config.init,
        "adversarial": config.adversarial.enabled,
        "world_size": world,
        "precision": precision,
        "steps": steps,
        "train_examples": len(data.train),
        "val_examples": len(data.val),
        "seconds": round(time.perf_counter() - began, 1),
        "config": to_dict(config),
    }
    verify_now(enforcer, f"at the end of the fine-tune (step {steps})")
    if hooks.on_done is not None:
        hooks.on_done(engine)
    if config.save_model and hooks.save_model:
        _save_model(engine, model, config, out, bert_model)
    if main:
        write_json_atomic(out / "metrics.json", result)
        print(
            f"{config.task} val: "
            + " ".join(f"{k}={v:.4f}" for k, v in final.items())
            + f"  ({out / 'metrics.json'})"
        )
    dist.barrier()
    if not keep_process_group:
        dist.shutdown()
    return result


def _ticket_meta(config: FinetuneConfig) -> dict:
    """Where the ticket came from (id, method, tasks, IMP round): what the report groups by."""
    from lottery.tickets import TicketStore, default_root

    ticket = TicketStore(config.store or default_root()).load(config.ticket)
    meta = ticket.meta
    return {"id": ticket.id, "method": meta.method, "tasks": list(meta.tasks), "imp_round": meta.imp_round}


def _save_model(engine, model: UniterForTask, config: FinetuneConfig, out: Path, tokenizer_dir: Path) -> None:
    """`out/model/`: config.json (+ task and head size), model.safetensors, tokenizer; written whole or not at all."""
    from safetensors.torch import save_file

    from lottery.models.uniter import tokenizer_files
    from lottery.train.weights import full_state_dict

    state = full_state_dict(engine)
    if not dist.is_main():
        return
    partial = out / ".model.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(partial / "model.safetensors"))
    description = {**model.config.__dict__, "task": config.task, "num_outputs": model.head[-1].out_features}
    (partial / "config.json").write_text(json.dumps(description, indent=2, default=str))
    for name, source in tokenizer_files(tokenizer_dir).items():
        shutil.copyfile(source, partial / name)
    shutil.rmtree(out / "model", ignore_errors=True)
    partial.rename(out / "model")
