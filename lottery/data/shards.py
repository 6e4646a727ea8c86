"""Write the shapes world as webdataset shards: `train-000000.tar ...`, `val-000000.tar ...`, `meta.json`.

A sample is a function of (seed, split, index) alone, so the same config gives the same samples
whatever the shard size or the order of writing. Every file appears under its final name only once
complete, and `meta.json` comes last: its presence means the dataset is whole, which is what the reader
(`pipeline.shard_urls`) checks.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lottery.data.captions import make_caption
from lottery.data.features import FeatureSpace
from lottery.data.render import MIN_SIZE, render_scene
from lottery.data.schema import META_NAME, encode_sample, validate_sample
from lottery.data.world import CLASS_NAMES, SceneConfig, generate_scene
from lottery.files import open_atomic
from lottery.progress import progress_bar

# tarfile writes in 10 KB records; a larger buffer turns them into fewer system calls.
_WRITE_BUFFER = 1 << 22
# The split id enters every sample's seed: renumbering it would change every sample.
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ShapesConfig:
    """Everything the shapes dataset depends on; stored in meta.json to recognise a finished build.

    `min_objects`/`max_objects` and `mentions_per_caption` set how hard scenes and captions are: a
    curriculum starts from a dataset with single-object scenes and one-object captions.
    `feature_noise` is the std of the per-region noise relative to the attribute signal (see features.py).
    `render_size` > 0 adds each scene's image (`png`, that many pixels a side) for patch models (ViLT);
    0 writes region features only, as builds did before images existed.
    """

    seed: int = 0
    train_samples: int = 20000
    val_samples: int = 1000
    samples_per_shard: int = 1000
    feat_dim: int = 2048
    min_objects: int = 3
    max_objects: int = 10
    mentions_per_caption: int = 2
    feature_noise: float = 0.5
    captions_per_scene: int = 1
    render_size: int = 0

    def __post_init__(self) -> None:
        for field in ("train_samples", "val_samples", "samples_per_shard", "feat_dim", "captions_per_scene"):
            if getattr(self, field) < 1:
                raise ValueError(f"shapes config: {field} must be >= 1, got {getattr(self, field)}")
        if self.mentions_per_caption not in (1, 2):
            raise ValueError(
                f"shapes config: mentions_per_caption must be 1 or 2, got {self.mentions_per_caption}"
            )
        if self.feature_noise < 0:
            raise ValueError(f"shapes config: feature_noise must be >= 0, got {self.feature_noise}")
        SceneConfig(self.min_objects, self.max_objects)  # raises on a bad object range
        if self.render_size != 0 and self.render_size < MIN_SIZE:
            raise ValueError(
                f"shapes config: render_size must be 0 (no images) or >= {MIN_SIZE} pixels, got {self.render_size}"
            )

    @property
    def scene(self) -> SceneConfig:
        return SceneConfig(self.min_objects, self.max_objects)

    def count(self, split: str) -> int:
        return {"train": self.train_samples, "val": self.val_samples}[split]


def make_sample(cfg: ShapesConfig, space: FeatureSpace, split: str, index: int) -> dict[str, Any]:
    """Sample `index` of `split`, decoded (see schema.py), drawn from its own rng.

    The json carries the scene, so fields of later tasks (questions, answers, referring expressions)
    can be derived from it, here or from the stored shards. The image (`render_size` > 0) is drawn from
    the scene alone, after the rng's last draw, so every other field is the same with or without it.
    """
    rng = np.random.default_rng([cfg.seed, SPLIT_IDS[split], index])
    scene = generate_scene(rng, cfg.scene)
    texts = [make_caption(scene, rng, cfg.mentions_per_caption).text for _ in range(cfg.captions_per_scene)]
    regions = space.regions(scene, rng)
    key = f"{split}-{index:08d}"
    sample = {
        "__key__": key,
        "json": {"id": f"shapes-{key}", "split": split, "texts": texts, "scene": scene.to_json()},
        "feat.npy": regions.feat,
        "box.npy": regions.box,
        "soft.npy": regions.soft,
    }
    if cfg.render_size:
        sample["png"] = render_scene(scene, cfg.render_size)
    return sample


def write_shapes_shards(out_dir: Path, cfg: ShapesConfig) -> Path:
    """Build the dataset in `out_dir` and return `out_dir`; do nothing if it is already built with `cfg`.

    A directory finished with another config is refused (ValueError) rather than overwritten: runs
    may be using it. A directory without meta.json is an unfinished build and is written over.
    """
    out_dir = Path(out_dir)
    meta_path = out_dir / META_NAME
    if meta_path.exists():
        _check_same_config(meta_path, cfg)
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    space = FeatureSpace.for_world(cfg.seed, cfg.feat_dim, cfg.feature_noise)
    shards = {split: _write_split(out_dir, cfg, space, split) for split in SPLIT_IDS}
    config = asdict(cfg)
    if not cfg.render_size:  # a build without images writes the meta.json it wrote before they existed
        del config["render_size"]
    meta: dict[str, Any] = {
        "source": "shapes",
        "config": config,
        "counts": {split: cfg.count(split) for split in SPLIT_IDS},
        "shards": shards,
        "class_names": list(CLASS_NAMES),
        "feat_dim": cfg.feat_dim,
    }
    if cfg.render_size:
        meta |= {"image_field": "png", "image_size": cfg.render_size}
    with open_atomic(meta_path, buffering=_WRITE_BUFFER) as f:
        f.write(json.dumps(meta, indent=2).encode())
    return out_dir


# The name the `lottery data shapes` command calls.
build_shapes = write_shapes_shards


def _write_split(out_dir: Path, cfg: ShapesConfig, space: FeatureSpace, split: str) -> list[str]:
    total = cfg.count(split)
    names = []
    with progress_bar(total=total, desc=f"shapes {split}", unit="sample") as progress:
        for shard in range(math.ceil(total / cfg.samples_per_shard)):
            name = f"{split}-{shard:06d}.tar"
            start = shard * cfg.samples_per_shard
            stop = min(total, start + cfg.samples_per_shard)
            with (
                open_atomic(out_dir / name, buffering=_WRITE_BUFFER) as f,
                tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar,
            ):
                for index in range(start, stop):
                    sample = make_sample(cfg, space, split, index)
                    validate_sample(sample, name)
                    add_sample(tar, encode_sample(sample))
                    progress.update()
            names.append(name)
    return names


def add_sample(tar: tarfile.TarFile, encoded: dict[str, Any]) -> None:
    """Append one sample as consecutive `<key>.<field>` members, as `webdataset.TarWriter` does.

    TarWriter always opens its tar in stream mode ("w|"), whose buffering costs about 100 us a sample
    here, a tenth of the budget; a plain tarfile writes the same members. mtime 0 makes the same samples
    give a byte-identical tar.
    """
    key = encoded["__key__"]
    for field in sorted(encoded):
        if field == "__key__":
            continue
        info = tarfile.TarInfo(f"{key}.{field}")
        info.size = len(encoded[field])
        info.mode = 0o444
        info.mtime = 0
        tar.addfile(info, io.BytesIO(encoded[field]))


def config_changes(meta_path: Path, cfg: ShapesConfig) -> list[tuple[str, Any, Any]]:
    """(field, built with, asked for) for each setting where `cfg` differs from the build `meta_path` records.

    A field the meta does not record was added after that build, which therefore used its default.
    An unreadable meta raises ValueError naming the file.
    """
    try:
        stored = json.loads(Path(meta_path).read_text())["config"]
        if not isinstance(stored, dict):
            raise TypeError(f"config is {type(stored).__name__}, not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{meta_path}: unreadable shapes meta ({exc}); delete {Path(meta_path).parent} to rebuild the dataset"
        ) from exc
    defaults = asdict(ShapesConfig())
    built = {**defaults, **stored}
    wanted = asdict(cfg)
    return [
        (k, built.get(k), wanted.get(k))
        for k in sorted(set(built) | set(wanted))
        if built.get(k) != wanted.get(k)
    ]


def _check_same_config(meta_path: Path, cfg: ShapesConfig) -> None:
    changes = config_changes(meta_path, cfg)
    if changes:
        changed = ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changes)
        raise ValueError(
            f"{meta_path.parent} already holds a shapes dataset with another config ({changed}); "
            f"write to another directory, or delete {meta_path.parent} to rebuild it"
        )
