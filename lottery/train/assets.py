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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lottery import dist
from lottery.config import ConfigError, DataConfig, ModelConfig

log = logging.getLogger("lottery.train.assets")

# a patch model's image side when no data says it (the shapes world's `--render` default)
DEFAULT_IMAGE_SIZE = 64
_NO_IMAGES = (
    "build the shapes world with data.render_size (`lottery data shapes --render SIZE`) or convert a dataset "
    "that has images"
)

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
    "render_size",
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


@dataclass(frozen=True)
class DataInputs:
    """What a shards directory can feed a model, from its meta.json: images and/or region features.

    The one answer to "does this data have images / regions" for both building a model and checking
    that a given model fits, so the two cannot disagree.
    """

    data_dir: Path
    image_size: int | None  # None: no images (a patch model cannot read it)
    feat_dim: int | None  # None: images only (a region model cannot read it)
    num_classes: int

    def images(self, who: str) -> int:
        """The image side, or a ConfigError saying `who` needs images this data lacks."""
        if self.image_size is None:
            raise ConfigError(f"{who} but {self.data_dir} has no images; {_NO_IMAGES}")
        return self.image_size

    def regions(self, who: str) -> tuple[int, int]:
        """(feature size, detector classes), or a ConfigError saying `who` reads regions this data lacks."""
        if self.feat_dim is None:
            raise ConfigError(f"{who} but {self.data_dir} holds images only")
        return self.feat_dim, self.num_classes


def data_inputs(data_dir: Path) -> DataInputs:
    meta = data_meta(Path(data_dir))
    has_images = bool(meta.get("image_field"))
    return DataInputs(
        data_dir=Path(data_dir),
        image_size=int(meta.get("image_size") or DEFAULT_IMAGE_SIZE) if has_images else None,
        feat_dim=int(meta["feat_dim"]) if meta.get("feat_dim") else None,
        num_classes=len(meta.get("class_names") or ()),
    )


def build_model_from_bert(
    bert: str,
    out: Path,
    *,
    img_dim: int = 2048,
    data_dir: str | Path | None = None,
    family: str = "uniter",
) -> Path:
    """A model directory of `family` (with the BERT's tokenizer) whose region inputs fit ``data_dir``'s shards.

    With ``data_dir``, the region feature size and the number of detector classes are read from its
    ``meta.json``, so the model cannot be built for data it cannot read.
    """
    from lottery.models.families import FAMILIES

    num_classes = 1601 if family == "uniter" else 1600  # each family's detector (Visual Genome) classes
    inputs = data_inputs(Path(data_dir)) if data_dir is not None else None
    if family == "vilt":  # a patch model: sized by the data's images, not its regions
        image_size = inputs.images(f"a patch model ({family}) needs images") if inputs else DEFAULT_IMAGE_SIZE
        return FAMILIES[family].build(bert, Path(out), image_size, 0)
    if inputs is not None:
        img_dim, num_classes = inputs.regions(f"data.dir: a {family} model reads region features")
    return FAMILIES[family].build(bert, Path(out), img_dim, num_classes)


def ensure_model(model: ModelConfig, data_dir: Path) -> Path:
    """The starting model directory; built from ``model.init_from_bert`` when missing (collective)."""
    out = Path(model.dir)
    dist.on_main(lambda: _build_or_check_model(model, out, data_dir), what="assets.model")
    return out


def _build_or_check_model(model: ModelConfig, out: Path, data_dir: Path) -> None:
    if not (out / "config.json").is_file():
        log.info(f"building {out} ({model.family}) from {model.init_from_bert} (first run only)")
        if out.is_dir():
            shutil.rmtree(out)  # left by a build from before builds were renamed into place
        # written whole or not at all
        build_model_from_bert(model.init_from_bert, out, data_dir=data_dir, family=model.family)
    _check_family(out, model.family)
    _check_fits_data(out, model.family, data_dir)


def _check_family(model_dir: Path, family: str) -> None:
    from lottery.models.families import family_of

    found = family_of(model_dir).name
    if found != family:
        raise ConfigError(
            f"model.dir: {model_dir} is a {found} model but model.family is {family}; "
            f"set model.family={found} or point model.dir at a {family} model (or a new directory to build one)"
        )


def _check_fits_data(model_dir: Path, family: str, data_dir: Path) -> None:
    from lottery.models.families import FAMILIES

    inputs = data_inputs(data_dir)
    if FAMILIES[family].patch_grid(model_dir) is not None:
        inputs.images(f"model.dir: {model_dir} is a patch model ({family})")
        return
    img_dim, num_classes = FAMILIES[family].input_sizes(model_dir)
    feat_dim, data_classes = inputs.regions(f"model.dir: {model_dir} reads region features")
    if (img_dim, num_classes) != (feat_dim, data_classes):
        raise ConfigError(
            f"model.dir: model {model_dir} takes {img_dim}-d regions and {num_classes} "
            f"classes but {data_dir} has {feat_dim}-d features and {data_classes} "
            "classes; point model.dir at a model built for this data (or a new directory to build one)"
        )
