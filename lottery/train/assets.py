"""What a job needs before it trains: the shards and the starting model directory, built once.

Collective: rank 0 builds whatever is missing (the shapes world, a UNITER from a BERT) and refuses a
shapes world built from other settings than the job's `data.*`, or a model made for other data;
then every rank reads the same directories. Both go through ``dist.on_main`` (sites
``assets.shapes_world`` and ``assets.model``), so a refusal or a failed build stops every rank at
once. Both builders write atomically (temp names, renamed at the end), so a job killed mid-build
leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from lottery import dist
from lottery.config import ConfigError, DataConfig, ModelConfig

log = logging.getLogger("lottery.train.assets")

if TYPE_CHECKING:
    from lottery.data.shards import ShapesConfig


# DataConfig's name for each ShapesConfig field it sets (the others keep their defaults)
_DATA_KEYS = (
    "seed",
    "train_samples",
    "val_samples",
    "samples_per_shard",
    "feat_dim",
    "min_objects",
    "max_objects",
    "mentions_per_caption",
)


def shapes_config(data: DataConfig) -> ShapesConfig:
    """The shapes world that `data` asks for."""
    from lottery.data.shards import ShapesConfig

    return ShapesConfig(**{key: getattr(data, key) for key in _DATA_KEYS})


def ensure_data(data: DataConfig) -> Path:
    """The shards directory: the shapes world `data` asks for, generated there on first use (collective).

    A directory already holding a world built from other settings is refused (ConfigError, on every
    rank) rather than reused or rebuilt: reusing it would train on scenes the config does not describe
    (while theta0's cache key says otherwise), and rebuilding it would change the data under the runs,
    task datasets (`tasks/`) and models built for it, which may be in use. It is not ours to replace.
    """
    out = Path(data.dir)
    dist.on_main(lambda: _build_or_check(out, shapes_config(data)), what="assets.shapes_world")
    return out


def _build_or_check(out: Path, wanted: ShapesConfig) -> None:
    from lottery.data.shards import build_shapes, config_changes

    meta = out / "meta.json"
    if not meta.is_file():
        log.info(f"building the shapes world in {out} (first run only)")
        build_shapes(out, wanted)
        return
    try:
        changes = config_changes(meta, wanted)
    except ValueError as err:
        raise ConfigError(f"data.dir: {err}") from None
    if changes:
        named = ", ".join(
            f"{'data.' if key in _DATA_KEYS else ''}{key} built {built!r}, asked {asked!r}"
            for key, built, asked in changes
        )
        raise ConfigError(
            f"data.dir {out} holds a shapes world built from other settings ({named}); set data.dir to "
            f"another directory, or delete {out} to rebuild it with these"
        )


def data_meta(data_dir: Path) -> dict:
    meta = Path(data_dir) / "meta.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} is missing: {data_dir} is not a complete shards directory")
    return json.loads(meta.read_text())


def build_model_from_bert(
    bert: str, out: Path, *, img_dim: int = 2048, data_dir: str | Path | None = None
) -> Path:
    """A UNITER model directory (with the BERT's tokenizer) whose region inputs fit ``data_dir``'s shards.

    With ``data_dir``, the region feature size and the number of detector classes are read from its
    ``meta.json``, so the model cannot be built for data it cannot read.
    """
    from lottery.models.uniter import MINILM, init_from_bert, save_pretrained, tokenizer_files

    num_classes = 1601
    if data_dir is not None:
        meta = data_meta(Path(data_dir))
        img_dim, num_classes = int(meta["feat_dim"]), len(meta["class_names"])
    model, report = init_from_bert(
        Path(bert) if bert != MINILM else bert, img_dim=img_dim, num_region_classes=num_classes
    )
    log.info(report.summary())
    source = Path(report.source)
    return save_pretrained(model, Path(out), extra_files=tokenizer_files(source))


def ensure_model(model: ModelConfig, data_dir: Path) -> Path:
    """The starting model directory; built from ``model.init_from_bert`` when missing (collective)."""
    out = Path(model.dir)
    dist.on_main(lambda: _build_or_check_model(model.init_from_bert, out, data_dir), what="assets.model")
    return out


def _build_or_check_model(bert: str, out: Path, data_dir: Path) -> None:
    if not (out / "config.json").is_file():
        log.info(f"building {out} from {bert} (first run only)")
        if out.is_dir():
            shutil.rmtree(out)  # left by a build from before builds were renamed into place
        build_model_from_bert(bert, out, data_dir=data_dir)  # save_pretrained: whole or nothing
    _check_fits_data(out, data_dir)


def _check_fits_data(model_dir: Path, data_dir: Path) -> None:
    from lottery.models.uniter import load_config

    config = load_config(model_dir)
    meta = data_meta(data_dir)
    if config.img_dim != int(meta["feat_dim"]) or config.num_region_classes != len(meta["class_names"]):
        raise ConfigError(
            f"model.dir: model {model_dir} takes {config.img_dim}-d regions and {config.num_region_classes} "
            f"classes but {data_dir} has {meta['feat_dim']}-d features and {len(meta['class_names'])} "
            "classes; point model.dir at a model built for this data (or a new directory to build one)"
        )
