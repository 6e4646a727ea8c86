"""What a command names on disk, checked before it starts anything: no process group, no engine, no theta0.

A mistyped ticket alias used to surface after the process group, theta0 and ``deepspeed.initialize``;
here it is refused at once. Every check reads local files and the environment only, so each rank of a
multi-rank launch runs it before the process group exists and fails the same way: no broadcast needed.
The nested stage configs (`lottery.config_stages.stages`) are loaded too, so a bad key in an override
list of a pipeline or study fails before its first stage.

Checks of what a job builds when missing (the shapes data, the model directory, theta0) are left to
the job; only what it reads is checked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lottery.config import FinetuneConfig, ImpConfig, PretrainConfig, TrainConfig

MINILM = "minilm"  # lottery.models.uniter.MINILM: the BERT shipped as a package, not a directory


class InputError(ValueError):
    """A path or name a command was given that cannot be used; the message names the option and the path."""


def require_model_dir(path: str | Path, option: str) -> Path:
    """A directory holding a UNITER model (config.json + model.safetensors)."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise InputError(
            f"{option} {path}: {what} (a model directory holds config.json and model.safetensors)"
        )
    missing = [name for name in ("config.json", "model.safetensors") if not (path / name).is_file()]
    if missing:
        raise InputError(f"{option} {path}: no {' or '.join(missing)}, so not a model directory")
    return path


def require_data_dir(path: str | Path, option: str) -> Path:
    """A finished shards directory (its writer writes meta.json last)."""
    path = Path(path)
    if not (path / "meta.json").is_file():
        what = "does not exist" if not path.exists() else "has no meta.json, so it is not a finished dataset"
        raise InputError(f"{option} {path}: {what}; build one with `lottery data shapes --out DIR`")
    return path


def require_path(path: str | Path, option: str, *, directory: bool = False) -> Path:
    path = Path(path)
    if not (path.is_dir() if directory else path.is_file()):
        what = "does not exist" if not path.exists() else f"is not a {'directory' if directory else 'file'}"
        raise InputError(f"{option} {path}: {what}")
    return path


def check_ticket(
    ref: str, store: str, key: str, scope: tuple[str, ...] = (), model_dir: str | Path | None = None
) -> None:
    """`ref` (an id, id prefix or alias; "" or dense: none) names a ticket of `store` (empty: default).

    With a `scope` (the run's; empty: the ticket's own) the ticket's scope is checked, and with a
    `model_dir` that exists its fingerprint too, as the run would after its engine: from the header
    only, since every rank runs this; the hash is checked by the one read rank 0 broadcasts.
    """
    if ref in ("", "dense"):
        return
    from lottery.tickets import TicketError, TicketStore, default_root
    from lottery.tickets.format import header_layout
    from lottery.tickets.model_checks import check_layout

    try:
        ticket_store = TicketStore(store or default_root())
        has_model = model_dir is not None and (Path(model_dir) / "config.json").is_file()
        if not scope and not has_model:
            ticket_store.resolve(ref)
            return
        path, header = ticket_store.header(ref)
        their_scope, their_fingerprint, meta = header_layout(header, str(path))
        fingerprint = name = None
        if has_model:
            from lottery.tickets.layout import model_layout

            name, fingerprint, _ = model_layout(model_dir, their_scope)
        check_layout(
            str(path),
            their_scope,
            their_fingerprint,
            f"{meta.family} {meta.model}",
            fingerprint=fingerprint,
            scope=scope or None,
            model_name=name,
        )
    except TicketError as err:
        raise TicketError(f"{key}={ref}: {err}") from None


def check_shards(data_dir: str | Path) -> None:
    """Every shard an existing dataset's meta.json lists is there and whole (`schema.check_tar_end`):
    a shard cut short is refused now, not at the step that reaches the cut. A dataset not built yet,
    or whose meta.json cannot be read, is left to the job, which builds or refuses it."""
    from lottery.data.schema import META_NAME, check_tar_end, listed_shards, shard_error

    try:
        splits = listed_shards(Path(data_dir))
    except (OSError, ValueError):
        return
    for name in (name for split in splits.values() for name in split):
        shard = Path(data_dir) / name
        if not shard.is_file():
            raise shard_error(str(shard), None, f"listed in {Path(data_dir) / META_NAME} but missing")
        check_tar_end(shard)


def check_train(train: TrainConfig, optim: Any) -> None:
    """The DeepSpeed JSON and precision requests against the run config (lottery.train.ds_json), and
    the tracker: its package installed, no other monitor enabled in the JSON (lottery.train.trackers)."""
    from lottery.train.ds_json import check_ds_config, read_ds_json
    from lottery.train.trackers import check_tracker, monitor_sections

    check_ds_config(train, optim)
    check_tracker(train.report_to)
    path, ds = read_ds_json(train)
    monitor_sections(train.report_to, Path("run"), ds, path)


def check_pretrain(config: PretrainConfig) -> None:
    """A pre-training (or theta0's): its ticket, the BERT it builds its model from, its DeepSpeed JSON."""
    sparsity = config.sparsity
    check_ticket(sparsity.ticket, sparsity.store, "sparsity.ticket", tuple(sparsity.scope), config.model.dir)
    check_shards(config.data.dir)
    bert = config.model.init_from_bert
    if bert != MINILM and not (Path(config.model.dir) / "config.json").is_file():
        require_path(bert, f"model.init_from_bert (to build {config.model.dir})", directory=True)
    check_train(config.train, config.optim)


def check_finetune(config: FinetuneConfig) -> None:
    check_ticket(config.ticket, config.store, "ticket", tuple(config.scope))
    check_train(config.train, config.optim)


def check_imp(config: ImpConfig) -> None:
    from lottery.tickets import check_alias

    check_train(config.train, config.optim)
    for alias in config.imp.publish.values():
        check_alias(alias)


def check_job(config: Any, out: Path | None = None) -> None:
    """Every check of `config` and of each stage it names (a pipeline's IMP run, a study's fine-tunes).

    Tickets a stage trains under are checked only when the job starts from them: those of a pipeline
    or study are published by its own IMP stage, later.
    """
    from lottery.config_stages import STUDY_PLACEHOLDER, stages

    nested = stages(config, out or STUDY_PLACEHOLDER)
    produced = not isinstance(config, FinetuneConfig | ImpConfig | PretrainConfig)
    for stage in [config, *(stage for _, stage in nested)]:
        if isinstance(stage, PretrainConfig):
            check_pretrain(stage)
        elif isinstance(stage, ImpConfig):
            check_imp(stage)
        elif isinstance(stage, FinetuneConfig) and produced:
            check_train(stage.train, stage.optim)
        elif isinstance(stage, FinetuneConfig):
            check_finetune(stage)
