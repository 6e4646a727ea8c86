"""``lottery pretrain``: a model family's pre-training tasks on a DeepSpeed engine, resumable.

The loop reads top to bottom: prepare data and model (rank 0 builds what is missing) -> engine ->
resume from the run directory's latest checkpoint -> per step: draw the task, collate, then the
shared optimiser step (`lottery.train.step`, also fine-tuning's) -> log, validate, checkpoint ->
save the final model directory.

Every random draw of a micro-step (task, masks, negatives, dropout) is seeded from (seed, rank,
micro-step), and the data stream is a deterministic function of (seed, rank, world size). A run
resumed from a checkpoint therefore sees exactly the batches and masks the uninterrupted run would.

``train.log_every`` / ``val_every`` / ``ckpt_every`` = 0 mean never, except at the end of the run (and of
an invocation cut short by ``stop_after_steps``), where the loop always logs, validates and checkpoints;
``finetune`` reads ``val_every=0`` the same way.

What rank 0 alone reads or writes goes through ``dist.on_main``, so a failure there stops every rank at
once instead of leaving them in the next collective. Its sites (``LOTTERY_RAISE=<name>`` fails one in
tests): ``pretrain.config_yaml`` (check or write the run's config.yaml), ``pretrain.model_written``,
``pretrain.metrics_truncate``, ``pretrain.metrics`` (every metrics.jsonl line), ``pretrain.save_model``
(the final model directory), ``pretrain.done`` (``DONE``); the checkpoint's are in
:mod:`lottery.train.checkpoint`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from lottery import dist
from lottery.config import ConfigError, PretrainConfig, digest, load_config, to_dict
from lottery.data.captions import COLOUR_WORDS, OPPOSITE_WORDS, SHAPE_WORDS, SIZE_WORDS
from lottery.data.patches import PatchGrid
from lottery.data.pipeline import eval_batches, example_stream, shard_urls
from lottery.models.families import FAMILIES
from lottery.models.uniter.checkpoint import load_tokenizer
from lottery.progress import progress_bar
from lottery.run_record import RECORD, identity_view, mark_done, run_digest, write_record
from lottery.sparsity.enforce import MaskEnforcer
from lottery.tasks.binding import AttributeVocab
from lottery.tasks.masking import TextVocab
from lottery.tasks.mixer import TaskMixer
from lottery.tasks.pretrain import CollateContext, PretrainTask, relation_reversals, summarise
from lottery.train.assets import data_meta, ensure_data, ensure_model
from lottery.train.batches import to_device
from lottery.train.checkpoint import load_checkpoint, resume_step, save_checkpoint
from lottery.train.curriculum import Stage, schedule, stage_at
from lottery.train.engine import build_engine, working_dtype
from lottery.train.final_model import save_model
from lottery.train.metrics import MetricsLog
from lottery.train.step import (
    Preempted,
    RunHooks,
    StopRequest,
    check_schedule,
    due,
    micro_seed,
    optimizer_step,
)
from lottery.train.ticketed import attach_ticket, check_every, verify_now
from lottery.train.trackers import Tracker
from lottery.train.weights import full_state_dict

log = logging.getLogger("lottery.pretrain")
VAL_SEED = 1_000_003


def _check_run_dir(run_dir: Path, config: PretrainConfig) -> None:
    """A rerun must be the same run: refuse a directory whose recorded config has another identity (rank 0).

    Identity is `run_record.identity_view`: a rerun may move the run or log it differently, not change
    what it computes. The record is read as a config, so a field it lacks (added to the schema after it
    was written) counts as its default: a run stopped before a new option existed still resumes.
    config.yaml is written whole (`write_record`), so a job killed while writing it never leaves a part
    that the rerun would read as "another config".
    """
    recorded = run_dir / RECORD
    if not recorded.exists():
        write_record(run_dir, config)
        return
    ours = to_dict(identity_view(config))
    try:
        theirs = to_dict(identity_view(load_config(str(recorded), [], cls=PretrainConfig)))
    except ConfigError as err:
        raise ConfigError(
            f"{recorded}: not a run record of this version ({err}); use a new run_dir"
        ) from None
    if theirs != ours:
        diff = sorted(
            f"{section}.{key}"
            for section, values in ours.items()
            if isinstance(values, dict)
            for key in values
            if (theirs.get(section) or {}).get(key) != values[key]
        )
        raise ConfigError(
            f"{run_dir} holds a run with another config (differs in {diff or 'run_dir'}); "
            "use a new run_dir, or the same config to resume"
        )


@torch.no_grad()
def validate(
    engine, batches: list[list], ctx: CollateContext, dtype: torch.dtype, tasks: dict[str, PretrainTask]
) -> dict[str, float]:
    """Every task of the family on a fixed slice of the val split, masks seeded per batch so every call is comparable.

    Collective: the val batches are dealt round-robin to the ranks (equal counts, so ZeRO-3's gathers
    stay in step) and the sums are all-reduced.
    """
    engine.eval()
    sums: dict[str, float] = {}
    world, rank = dist.world_size(), dist.rank()
    usable = len(batches) - len(batches) % world
    for index in range(rank, usable, world):
        for offset, (_, task) in enumerate(sorted(tasks.items())):
            generator = torch.Generator().manual_seed(VAL_SEED + 10 * index + offset)
            batch = to_device(task.collate(batches[index], ctx, generator), engine.device, dtype)
            _, stats = engine(batch, task)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
    keys = sorted(key for task in tasks.values() for key in task.stat_keys())
    sums = dist.all_reduce_sum({k: sums.get(k, 0.0) for k in keys})
    engine.train()
    return summarise(sums, tasks)


def pretrain(
    config: PretrainConfig, keep_process_group: bool = False, hooks: RunHooks | None = None
) -> dict[str, float]:
    """Run (or resume) a pre-training job; returns the final val metrics. Collective on every rank.

    The process group is shut down at the end unless `keep_process_group` (a caller that goes on). The
    run directory is held for the job (`run_lock`): a second identical job is refused, naming this one.
    """
    from lottery.run_lock import holding

    dist.init()
    with holding(Path(config.run_dir)):
        return _pretrain(config, keep_process_group, hooks)


def _pretrain(config: PretrainConfig, keep_process_group: bool, hooks: RunHooks | None) -> dict[str, float]:
    hooks = hooks or RunHooks()
    launch = dist.init()
    run_dir = Path(config.run_dir)
    train = config.train
    main = dist.is_main()
    if main:
        log.info(
            f"lottery pretrain: {launch.world_size} rank(s) via {launch.launcher}, backend {dist.backend_name()}, "
            f"ZeRO-{train.zero_stage}, run {run_dir} (config {digest(config)[:12]})"
        )
    check_schedule(train)
    dist.on_main(lambda: _check_run_dir(run_dir, config), what="pretrain.config_yaml")
    data_dir = ensure_data(config.data)
    model_dir = ensure_model(config.model, data_dir)
    tokenizer = load_tokenizer(model_dir)
    ctx = CollateContext(
        TextVocab.from_tokenizer(tokenizer),
        config.tasks.mask_prob,
        config.tasks.itm_neg_prob,
        config.tasks.wra_weight,
        config.tasks.itm_relation_neg_prob,
        relation_reversals(tokenizer, OPPOSITE_WORDS) if config.tasks.itm_relation_neg_prob else {},
        config.tasks.itm_attribute_neg_prob,
        AttributeVocab.from_tokenizer(tokenizer, COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS)
        if config.tasks.itm_attribute_neg_prob
        else None,
    )
    family = FAMILIES[config.model.family]
    tasks = family.tasks()
    mixer = TaskMixer(config.tasks.mix, train.seed, set(tasks))
    model = family.load(model_dir)
    engine, precision = build_engine(model, train, config.optim, run_dir)
    enforcer = attach_ticket(engine, config.sparsity)
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=main)
    tracker = Tracker(engine)

    start = _resume(engine, enforcer, run_dir, metrics)
    end = hooks.end_step or train.steps
    model_written = dist.on_main(
        lambda: (run_dir / "model" / "config.json").is_file(), what="pretrain.model_written"
    )
    if start >= end and (not hooks.save_model or model_written):
        if main:
            log.info(f"{run_dir} is complete ({end} steps)")
        _complete(engine, config, hooks)
        if not keep_process_group:
            dist.shutdown()
        return {}

    patches = family.patch_grid(model_dir)  # a patch model's images, cut as it reads them (None: regions)
    val = _val_batches(config, data_dir, model_dir, patches)
    stages = schedule(config.data)
    feat_dim = data_meta(data_dir).get("feat_dim")  # phases must feed the same model as the main scenes
    for stage in stages[:-1]:
        ensure_data(replace(stage.data, feat_dim=feat_dim))
    loop = _Loop(
        config,
        engine,
        enforcer,
        ctx,
        mixer,
        working_dtype(precision),
        metrics,
        model_dir,
        val,
        stages,
        tracker,
        tasks,
        patches,
    )
    result, end, stop_at = loop.run(start, end, hooks)

    if stop_at == end:
        verify_now(enforcer, f"at the end of the run (step {end})")
    if stop_at == end and hooks.save_model:
        state = full_state_dict(engine)
        dist.on_main(lambda: save_model(family, state, model_dir, run_dir), what="pretrain.save_model")
    if stop_at == end:
        _complete(engine, config, hooks)
    elif main:
        log.info(f"stopped after step {stop_at} of {end}; rerun the same command to continue")
    if not keep_process_group:
        dist.shutdown()
    return result


def _complete(engine, config: PretrainConfig, hooks: RunHooks) -> None:
    """The run is complete (every rank): the caller's `on_done`, then ``DONE`` unless the caller marks it."""
    if hooks.on_done is not None:
        hooks.on_done(engine)
    if hooks.mark_done:
        identity = run_digest(config)
        dist.on_main(lambda: mark_done(Path(config.run_dir), identity), what="pretrain.done")


def _val_batches(
    config: PretrainConfig, data_dir: Path, model_dir: Path, patches: PatchGrid | None
) -> list[list]:
    """The fixed slice of the val split every validation of the run sees."""
    stream = eval_batches(
        shard_urls(data_dir, "val"),
        tokenizer_dir=model_dir,
        max_text_len=config.data.max_text_len,
        batch_size=config.train.batch_size,
        patches=patches,
    )
    return list(itertools.islice(stream, config.train.val_batches))


@dataclass
class _Loop:
    """The steps of one invocation, from the step after `start` to its stop (all collective)."""

    config: PretrainConfig
    engine: object
    enforcer: MaskEnforcer | None
    ctx: CollateContext
    mixer: TaskMixer
    dtype: torch.dtype
    metrics: MetricsLog
    model_dir: Path
    val: list[list]
    stages: list[Stage]
    tracker: Tracker
    tasks: dict[str, PretrainTask]
    patches: PatchGrid | None  # a patch model's grid (lottery.data.patches); None for region models

    def batches(self, stage: Stage, skip_steps: int) -> Iterator[list]:
        """The stage's training stream, past the batches of the steps already done in it."""
        config, train = self.config, self.config.train
        stream = iter(
            example_stream(
                shard_urls(Path(stage.data.dir), "train"),
                rank=dist.rank(),
                world_size=dist.world_size(),
                tokenizer_dir=self.model_dir,
                max_text_len=config.data.max_text_len,
                seed=config.data.seed + train.seed,
                num_workers=config.data.num_workers,
                batch_size=train.batch_size,
                patches=self.patches,
            )
        )
        for _ in range(skip_steps * train.grad_accum):
            next(stream)
        return stream

    def validation(self, step: int) -> dict[str, float]:
        result = validate(self.engine, self.val, self.ctx, self.dtype, self.tasks)
        _write_metrics(self.metrics, {"step": step, "val": result}, self.tracker)
        if dist.is_main():
            tqdm.write(f"step {step} val " + " ".join(f"{k}={v:.4f}" for k, v in sorted(result.items())))
        return result

    def step(self, step: int, batches: Iterator[list]) -> tuple[dict, list[tuple[str, float]]]:
        """One optimiser step of `grad_accum` micro-steps (`step.optimizer_step`): its metrics record
        and the (task, loss) of each micro-step, for `StopRequest.agreed`."""
        train = self.config.train

        def micro_batches() -> Iterator[tuple[dict, object]]:
            for micro in range(train.grad_accum):
                micro_step = (step - 1) * train.grad_accum + micro
                task = self.tasks[self.mixer.task_for(micro_step)]
                seed = micro_seed(train.seed, dist.rank(), micro_step)
                torch.manual_seed(seed)  # dropout: the same in a resumed run
                yield task.collate(next(batches), self.ctx, torch.Generator().manual_seed(seed)), task

        began = time.perf_counter()
        named = optimizer_step(self.engine, self.enforcer, micro_batches(), self.dtype, step=step)
        elapsed = time.perf_counter() - began
        losses = [loss for _, loss in named]
        by_task: dict[str, list[float]] = {}
        for name, loss in named:
            by_task.setdefault(name, []).append(loss)
        record = {
            "step": step,
            "loss": sum(losses) / train.grad_accum,
            "losses": {name: sum(values) / len(values) for name, values in by_task.items()},
            "lr": self.engine.get_lr()[0],
            "samples_per_s": train.batch_size * train.grad_accum * dist.world_size() / elapsed,
            "world_size": dist.world_size(),
        }
        return record, named

    def run(self, start: int, end: int, hooks: RunHooks) -> tuple[dict[str, float], int, int]:
        """Steps `start`+1 on; returns the last val metrics, the run's end and this invocation's stop."""
        train, main, run_dir = self.config.train, dist.is_main(), Path(self.config.run_dir)
        current = stage_at(self.stages, start + 1)
        batches = self.batches(current, start + 1 - current.first_step)
        result: dict[str, float] = {}
        if start == 0 and hooks.on_start is not None:
            hooks.on_start(self.engine)
        if start == 0 and train.val_at_start:
            result = self.validation(0)
        stop_at = end if not train.stop_after_steps else min(end, start + train.stop_after_steps)
        progress = progress_bar(total=end, initial=start, enabled=main, desc="pretrain")
        self.engine.train()
        with StopRequest() as stop:
            for step in range(start + 1, stop_at + 1):
                if not current.holds(step):
                    current = stage_at(self.stages, step)
                    batches = self.batches(current, 0)
                    if main:
                        tqdm.write(f"step {step}: scenes of {current.data.dir}")
                record, named = self.step(step, batches)
                signalled = stop.agreed(step, named)  # raises on a non-finite loss, on every rank
                check_every(self.enforcer, self.config.sparsity, step)
                if signalled:
                    stop_at = step  # logged and checkpointed below, as the last step of this invocation
                if due(step, train.log_every, stop_at):
                    _write_metrics(self.metrics, record, self.tracker)
                progress.update(1)
                progress.set_postfix({k: f"{v:.3f}" for k, v in record["losses"].items()}, refresh=False)
                stop_here = hooks.on_step is not None and hooks.on_step(self.engine, step)
                if stop_here:
                    end = stop_at = step
                if due(step, train.val_every, end):
                    result = self.validation(step)
                if due(step, train.ckpt_every, stop_at):
                    verify_now(self.enforcer, f"before the checkpoint of step {step}")
                    save_checkpoint(self.engine, run_dir, step)
                if stop_here and main:
                    tqdm.write(f"step {step}: the run ends here (asked by its caller)")
                if signalled and step < end:
                    progress.close()
                    raise Preempted(step, signalled)
                if stop_here:
                    break
        progress.close()
        return result, end, stop_at


def _resume(engine, enforcer, run_dir: Path, metrics: MetricsLog) -> int:
    """The step the run continues from (0: a new run), its checkpoint loaded (collective)."""
    step = resume_step(run_dir)  # rank 0 reads it for all: ranks that decided apart would deadlock
    if step is None:
        return 0
    start = load_checkpoint(engine, run_dir, step)
    verify_now(enforcer, f"after loading the checkpoint of step {start}")
    dist.on_main(lambda: metrics.truncate_after(start), what="pretrain.metrics_truncate")
    if dist.is_main():
        log.info(f"resumed from the checkpoint at step {start}")
    return start


def _write_metrics(metrics: MetricsLog, record: dict, tracker: Tracker | None = None) -> None:
    """One metrics.jsonl line and the tracker's points (rank 0 writes, collective): a full disk or a
    tracker that fails stops every rank, not one."""

    def write() -> None:
        metrics.write(record)
        if tracker is not None and "val" in record:
            tracker.log({"step": record["step"], **record["val"]}, "val")
        elif tracker is not None:
            tracker.log({k: v for k, v in record.items() if k != "world_size"}, "train")

    dist.on_main(write, what="pretrain.metrics")
