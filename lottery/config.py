"""Typed run configuration: the frozen dataclasses every job is described by (config_loader.py reads them).

A run's identity is its resolved config, so everything a job does is written here, nested by concern
(data, model, tasks, optimiser, training). ``load_config("pretrain-uniter-mini", ["train.steps=50"])``
reads a shipped YAML (or a file path), applies the overrides in order, and checks every key, type and
value (the ``Annotated`` checks of config_checks.py: choices, ranges), so a typo or a nonsense value on
the command line fails at once with the key's name instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field
from typing import Annotated, Any

from lottery.config_checks import (
    NonNegativeFloat,
    NonNegativeInt,
    Overrides,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    Regexes,
    Sparsity,
    one_of,
)
from lottery.config_grid import AUTO_WORKERS, BASELINES, PipelineConfig, Task, check_grid  # noqa: F401

# the loader lives in its own module; its names are part of this module's interface
from lottery.config_loader import (  # noqa: F401
    ADDED,
    CONFIG_DIR,
    ConfigError,
    canonical_tree,
    config_path,
    digest,
    parse_override,
    to_dict,
    to_yaml,
)
from lottery.config_loader import load_config as _load_config
from lottery.data.examples import TASK_NAMES

# the allowed values of the fields that name a choice (the modules that act on them hold the same lists)
# each model family's pre-training tasks (lottery.tasks.pretrain.TASKS, lxmert_pretrain.LXMERT_TASKS, vilt_pretrain.VILT_TASKS)
FAMILY_TASKS = {
    "uniter": ("itm", "mlm", "mrfr", "mrckl"),
    "lxmert": ("itm", "mlm", "mrfr", "obj"),
    "vilt": ("itm", "mlm"),
}
PRETRAIN_TASKS = tuple(dict.fromkeys(name for names in FAMILY_TASKS.values() for name in names))
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ZERO_STAGES = (0, 1, 2, 3)
IMP_METHODS = ("imp", "oneshot", "random")  # lottery.imp.checks.METHODS
STARTS = ("theta0", "bert", "shuffled")  # lottery.train.starts.STARTS
REPORT_TO = (
    "none",
    "tensorboard",
    "wandb",
    "csv",
)  # where curves go besides metrics.jsonl (lottery.train.trackers)
Objects = Annotated[int, Range(ge=1, le=10)]  # objects in a scene (lottery.data.world.SceneConfig)
Mentions = Annotated[int, one_of(1, 2)]  # objects a caption names (lottery.data.captions)
Beta = Annotated[float, Range(ge=0, lt=1)]

NOT_IDENTITY = "not_identity"  # field metadata key: the value a run's identity view holds instead


def placement(
    default: Any = MISSING, *, factory: Any = MISSING, neutral: Any = MISSING, added: bool = False
) -> Field:
    """A field that says where a run lives or how often it reports, not what it computes.

    Such fields are left out of a run's identity (`lottery.run_record.identity_view` puts `neutral`,
    by default the field's default, in their place), so moving a run or logging it more often finds
    the same run directory, theta0 and tickets instead of training again.
    """
    if neutral is MISSING:
        neutral = factory() if factory is not MISSING else default
    metadata = {NOT_IDENTITY: neutral}
    if added:  # added after runs were first named: digests leave its neutral value out (see `added_later`)
        metadata[ADDED] = neutral
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def added_later(default: Any) -> Field:
    """An option added after runs were first named: at `default`, digests leave it out (``ADDED``)."""
    return field(default=default, metadata={ADDED: default})


@dataclass(frozen=True)
class ScenePhase:
    """The first ``steps`` steps (after the previous phases) read scenes of this complexity.

    A curriculum of easy scenes first (one object, captions naming one object) makes grounding start
    sooner (docs/design.md, "Facts that shaped the design"). Each phase has its own shards directory.
    """

    steps: PositiveInt
    min_objects: Objects = 1
    max_objects: Objects = 1
    mentions_per_caption: Mentions = 1
    train_samples: PositiveInt = 5000

    def __post_init__(self) -> None:
        _check_objects(self.min_objects, self.max_objects)


def _check_objects(low: int, high: int) -> None:
    if low > high:
        raise ConfigError(f"min_objects={low} must be <= max_objects={high}")


MIN_RENDER_SIZE = 16  # lottery.data.render.MIN_SIZE, not imported: that would load Pillow with the config


def _check_render_size(size: int) -> None:
    if size != 0 and size < MIN_RENDER_SIZE:
        raise ConfigError(f"render_size={size} must be 0 (no images) or >= {MIN_RENDER_SIZE} pixels")


@dataclass(frozen=True)
class DataConfig:
    """Where the shards live and how they are read. ``dir`` is built (shapes world) if missing.

    ``render_size`` > 0 also draws each scene as a PNG image of that side, for patch models (ViLT).
    """

    dir: str = "data/shapes"
    seed: NonNegativeInt = 0
    train_samples: PositiveInt = 20000
    val_samples: PositiveInt = 1000
    samples_per_shard: PositiveInt = 1000
    feat_dim: PositiveInt = 2048
    min_objects: Objects = 3
    max_objects: Objects = 10
    mentions_per_caption: Mentions = 2
    max_text_len: PositiveInt = 60
    num_workers: NonNegativeInt = 1
    curriculum: tuple[ScenePhase, ...] = ()  # phases before the main scenes above; () = none
    render_size: NonNegativeInt = added_later(0)  # 0: region features only

    def __post_init__(self) -> None:
        _check_objects(self.min_objects, self.max_objects)
        _check_render_size(self.render_size)


@dataclass(frozen=True)
class ModelConfig:
    """The starting model directory; built from ``init_from_bert`` when it does not exist yet.

    ``family`` is the architecture (``lottery.models.families``): the directory must be one of it, and
    ``tasks.mix`` may only name its tasks.
    """

    dir: str = "models/uniter-mini"
    init_from_bert: str = "minilm"
    family: Annotated[str, one_of(*FAMILY_TASKS)] = added_later("uniter")


@dataclass(frozen=True)
class TasksConfig:
    """The pre-training objective: which tasks, in what ratio, and their masking rates."""

    mix: dict[Annotated[str, one_of(*PRETRAIN_TASKS)], NonNegativeFloat] = field(
        default_factory=lambda: {"itm": 2.0, "mlm": 2.0, "mrfr": 1.0, "mrckl": 1.0}
    )
    mask_prob: Probability = 0.15
    itm_neg_prob: Probability = 0.5
    # Of the mismatched ITM pairs, the share made by reversing the caption's relation word (left <->
    # right, above <-> below) beside its own image instead of pairing it with another image: a
    # negative that only relations tell apart (0: UNITER's random images only).
    itm_relation_neg_prob: Probability = added_later(0.0)
    # The share made by changing the colour or shape of one object the caption mentions, so that no
    # object of its scene fits the phrase, beside its own image: a negative only word-to-region
    # binding tells apart (`lottery.tasks.binding`). At most 1 with the above.
    itm_attribute_neg_prob: Probability = added_later(0.0)
    wra_weight: NonNegativeFloat = 0.1  # word-region alignment (optimal transport) added to ITM, as in UNITER

    def __post_init__(self) -> None:
        if self.itm_relation_neg_prob + self.itm_attribute_neg_prob > 1.0:
            raise ConfigError(
                "itm_relation_neg_prob + itm_attribute_neg_prob must be at most 1, got "
                f"{self.itm_relation_neg_prob} + {self.itm_attribute_neg_prob}"
            )
        if not any(weight > 0 for weight in self.mix.values()):
            raise ConfigError(f"mix: {self.mix} gives no task a positive ratio")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW as UNITER trains it: lr 5e-5, betas (0.9, 0.98), weight decay 0.01 except bias/LayerNorm."""

    lr: PositiveFloat = 5e-5
    betas: tuple[Beta, Beta] = (0.9, 0.98)
    eps: PositiveFloat = 1e-6
    weight_decay: NonNegativeFloat = 0.01
    warmup_steps: NonNegativeInt = 30
    grad_clip: NonNegativeFloat = 2.0  # 0: no clipping
    # A separate lr for the parts a BERT does not give (image embeddings, pre-training heads) and the
    # pooler (MiniLM's was never trained: its weights are ~10x smaller than the encoder's); 0 = lr.
    new_parts_lr: NonNegativeFloat = 0.0
    new_parts: Regexes = (
        r"uniter\.img_embeddings\..*",
        r"uniter\.pooler\..*",
        r"cls\.predictions\.(transform\..*|bias)",
        r"(feat_regress|region_classifier|itm_output)\..*",
    )


@dataclass(frozen=True)
class TrainConfig:
    """Steps are optimiser steps; a step consumes ``grad_accum`` micro-batches of ``batch_size`` per rank.

    ``precision``: ``auto`` picks bf16 on a GPU that supports it and fp32 elsewhere (CPU).
    ``stop_after_steps``: end this invocation (with a checkpoint) after that many steps; the same command
    continues from there. For time-sliced jobs; 0 means run to ``steps``.
    """

    steps: PositiveInt = 300
    batch_size: PositiveInt = 16
    grad_accum: PositiveInt = 1
    zero_stage: Annotated[int, one_of(*ZERO_STAGES)] = 2
    ds_config: str = ""
    precision: Annotated[str, one_of(*PRECISIONS)] = "auto"
    # where training curves go besides metrics.jsonl (lottery.train.trackers): a view, not the run's identity
    report_to: Annotated[str, one_of(*REPORT_TO)] = placement("none", added=True)
    seed: NonNegativeInt = 0
    log_every: NonNegativeInt = placement(10, neutral=1)  # these three: 0 = only at the last step
    val_every: NonNegativeInt = placement(100, neutral=1)
    val_batches: NonNegativeInt = 16
    val_at_start: bool = True
    ckpt_every: NonNegativeInt = placement(100, neutral=1)
    stop_after_steps: NonNegativeInt = placement(0)


@dataclass(frozen=True)
class SparsityConfig:
    """A ticket to train under: its pruned weights stay exactly 0.0 for the whole run, at any ZeRO stage.

    ``ticket``: an id, unique id prefix or alias in ``store`` (empty: train dense).
    ``store``: the ticket store directory (empty: ``$LOTTERY_TICKET_STORE`` or ``tickets/``).
    ``scope``: the prunable scope (full-match regexes) the run expects; empty takes the ticket's own
    scope (any ticket cut with ``lottery ticket cut --scope`` trains), and the model's fingerprint is
    checked under it either way.
    ``verify_every``: every N steps, check on every rank that no pruned entry of the weights, fp32
    masters or Adam moments has moved. The check also runs at every checkpoint and at the run's end,
    whatever N (0: only there), so a revived mask stops the run before any ticket or model is written.
    """

    ticket: str = ""
    store: str = ""
    scope: Regexes = ()
    verify_every: NonNegativeInt = placement(100, neutral=0)


@dataclass(frozen=True)
class Theta0Options:
    """How a job treats the theta0 that this (pre-training) config builds, not what theta0 is.

    ``require_criteria``: refuse (exit 2, one line) a theta0 that failed its criteria, instead of using
    it with a warning and ``theta0_passed: false`` in the job's metrics. A job sets it on the config
    theta0 is built from: ``theta0_overrides=[theta0.require_criteria=true]`` (fine-tune, IMP) or
    ``lottery theta0 theta0.require_criteria=true``. `lottery.train.theta0.identity` leaves this section
    out, so it never changes which theta0 a config names.
    """

    require_criteria: bool = False


@dataclass(frozen=True)
class PretrainConfig:
    """Everything ``lottery pretrain`` needs; ``run_dir`` holds metrics, checkpoints and the final model.

    ``theta0`` only matters when the config builds a theta0 (see `Theta0Options`).
    """

    run_dir: str = placement("runs/pretrain", neutral="")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    theta0: Theta0Options = field(default_factory=Theta0Options)

    def __post_init__(self) -> None:
        family, known = self.model.family, FAMILY_TASKS[self.model.family]
        foreign = foreign_tasks(family, self.tasks.mix)
        if foreign:
            raise ConfigError(
                f"tasks.mix: {family} has no task(s) {foreign}; its pre-training tasks are {list(known)}"
            )


def foreign_tasks(family: str, mix: dict[str, float]) -> list[str]:
    """The tasks `mix` gives a positive ratio that `family` has not (sorted): what a run must refuse."""
    return sorted(name for name, weight in mix.items() if weight > 0 and name not in FAMILY_TASKS[family])


DEFAULT_SCHEDULE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class ImpSettings:
    """What an IMP run prunes, how, and when it may stop a round early.

    ``method``: ``imp`` (train, prune 10% of the original weights by global magnitude, rewind, repeat),
    ``oneshot`` (train once, prune straight to each target) or ``random`` (random masks at each target).
    ``schedule``: the target sparsities, each a fraction of the original prunable weights.
    ``rewind_step``: 0 rewinds to theta0; k > 0 to the weights at step k of round 0.
    ``objective``: what a round trains: ``pretrain`` (the task mix of ``tasks``) or a downstream task
    (``vqa`` ...: the task's fine-tune with the run's ``train`` section, its shipped config for data,
    optimiser and head, then ``task_overrides``), which gives task-specific tickets.
    ``early_bird_every``: every N steps draw the mask the round would end with and log its Hamming
    distance to the previous draw (0: off); ``early_bird_threshold``: end the round once that distance,
    as a fraction of the prunable weights, is below it (0: never).
    ``publish``: sparsity -> alias, put into ``store`` when the run ends (e.g. ``{0.6: uniter-mini/pretrain/s60}``).
    ``scope``: the prunable scope, full-match regexes over parameter names (empty: the BERT-tickets
    scope, encoder Q/K/V, attention output, FFN in/out and the pooler); recorded in every ticket.
    """

    method: Annotated[str, one_of(*IMP_METHODS)] = "imp"
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE  # checked whole by lottery.imp.checks.check_config
    rewind_step: NonNegativeInt = 0
    seed: NonNegativeInt = 0
    objective: Annotated[str, one_of("pretrain", *TASK_NAMES)] = "pretrain"
    task_overrides: Overrides = ()
    early_bird_every: NonNegativeInt = 0
    early_bird_threshold: Probability = 0.0
    publish: dict[Sparsity, str] = placement(factory=dict)
    store: str = placement("")
    scope: Regexes = ()


@dataclass(frozen=True)
class ImpConfig:
    """``lottery imp``: theta0 (built once from the ``theta0`` config and ``theta0_overrides``), then rounds.

    Every round trains ``train.steps`` steps on the data of theta0's config (its main scenes), with
    ``tasks``, ``optim`` and ``train``. The run directory is ``runs_dir/<method>-<digest>``: the same
    command finds the same directory and continues it.
    """

    runs_dir: str = placement("runs/imp", neutral="")
    # which theta0 enters the identity as its digest (`lottery.imp.state.run_identity`), not by name
    theta0: str = placement("pretrain-uniter-mini", neutral="")
    theta0_overrides: Overrides = placement(())
    tasks: TasksConfig = field(default_factory=TasksConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    imp: ImpSettings = field(default_factory=ImpSettings)


@dataclass(frozen=True)
class FinetuneData:
    """Which examples a fine-tune reads: the first ``train_examples`` / ``val_examples`` of the task's
    splits after a seeded shuffle (0: all); ``negatives``: retrieval's other images per caption in
    training; ``val_images``: retrieval's evaluation grid (all captions of that many val images)."""

    train_examples: NonNegativeInt = 4000
    # examples only on the first N train images (sorted keys; 0: all): fewer shards read
    train_images: NonNegativeInt = 2000
    val_examples: NonNegativeInt = 500
    negatives: NonNegativeInt = 3
    val_images: NonNegativeInt = 25
    seed: NonNegativeInt = 0


@dataclass(frozen=True)
class AdversarialConfig:
    """VILLA-style adversarial fine-tuning: perturb the text and region embeddings.

    ``steps`` ascent steps of ``step_size`` along the per-example L2-normalised gradient, the
    perturbation kept in the L2 ball of radius ``norm_bound`` (0: no projection, VILLA's default), and
    the adversarial loss plus ``kl_weight`` x the symmetric KL between clean and adversarial predictions
    averaged into the training loss (VILLA: 3 steps, 1e-3, KL weight 1.5).
    """

    enabled: bool = False
    steps: PositiveInt = 3
    step_size: PositiveFloat = 1e-3
    norm_bound: NonNegativeFloat = 0.0
    kl_weight: NonNegativeFloat = 1.5


def _finetune_optim() -> OptimConfig:
    return OptimConfig(lr=5e-5, warmup_steps=20, new_parts_lr=5e-4, new_parts=(r"head\..*",))


def _finetune_train() -> TrainConfig:
    return TrainConfig(steps=200, batch_size=16, zero_stage=0, val_every=100, val_batches=0, ckpt_every=0)


@dataclass(frozen=True)
class FinetuneConfig:
    """``lottery finetune``: one task from a start (``init``) under a ticket (``dense``: none).

    ``init``: ``theta0`` (the pre-trained model), ``bert`` (the text side from the BERT, the rest fresh:
    the paper's theta0') or ``shuffled`` (theta0's values permuted within each tensor, seeded by
    ``init_seed``: the paper's theta0''). The run directory is ``runs_dir/<task>-<ticket>-<init>-<digest>``.
    """

    runs_dir: str = placement("runs/finetune", neutral="")
    task: Task = "vqa"
    theta0: str = "pretrain-uniter-mini"
    theta0_overrides: Overrides = ()
    init: Annotated[str, one_of(*STARTS)] = "theta0"
    init_seed: NonNegativeInt = 0
    ticket: str = "dense"
    store: str = ""
    scope: Regexes = ()  # as sparsity.scope: empty takes the ticket's own
    verify_every: NonNegativeInt = placement(
        100, neutral=0
    )  # as sparsity.verify_every (checks also run at the end)
    save_model: bool = placement(True)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    data: FinetuneData = field(default_factory=FinetuneData)
    optim: OptimConfig = field(default_factory=_finetune_optim)
    train: TrainConfig = field(default_factory=_finetune_train)


def load_config(name_or_file: str | None, overrides: list[str] = (), cls: type = PretrainConfig):
    """Read a YAML config (or start from the defaults when None), apply overrides, type-check it."""
    return _load_config(name_or_file, overrides, cls)
