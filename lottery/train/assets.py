"""What a job needs before it trains: the shards and the starting model directory, built once.

Collective: rank 0 builds whatever is missing (the shapes world, a UNITER from a BERT) while the other
ranks wait at a barrier; then every rank reads the same directories. Both builders write atomically
(temp names, renamed at the end), so a job killed mid-build leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lottery import dist
from lottery.config import DataConfig, ModelConfig


def ensure_data(data: DataConfig) -> Path:
    """The shards directory; the shapes world is generated there when its ``meta.json`` is missing."""
    out = Path(data.dir)
    if dist.is_main() and not (out / "meta.json").is_file():
        from lottery.data.shards import ShapesConfig, build_shapes

        print(f"building the shapes world in {out} (first run only)", flush=True)
        build_shapes(
            out,
            ShapesConfig(
                seed=data.seed,
                train_samples=data.train_samples,
                val_samples=data.val_samples,
                samples_per_shard=data.samples_per_shard,
                feat_dim=data.feat_dim,
                min_objects=data.min_objects,
                max_objects=data.max_objects,
                mentions_per_caption=data.mentions_per_caption,
            ),
        )
    dist.barrier()
    return out


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
    print(report.summary(), flush=True)
    source = Path(report.source)
    return save_pretrained(model, Path(out), extra_files=tokenizer_files(source))


def ensure_model(model: ModelConfig, data_dir: Path) -> Path:
    """The starting model directory; built from ``model.init_from_bert`` when missing (rank 0)."""
    out = Path(model.dir)
    if dist.is_main() and not (out / "config.json").is_file():
        print(f"building {out} from {model.init_from_bert} (first run only)", flush=True)
        # built aside and renamed: a killed build leaves no half-written model directory behind
        partial = out.parent / f".{out.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        build_model_from_bert(model.init_from_bert, partial, data_dir=data_dir)
        if out.is_dir() and not (out / "config.json").is_file():
            shutil.rmtree(out)  # left by a build from before builds were renamed into place
        partial.rename(out)
    dist.barrier()
    _check_fits_data(out, data_dir)
    return out


def _check_fits_data(model_dir: Path, data_dir: Path) -> None:
    from lottery.models.uniter import load_config

    config = load_config(model_dir)
    meta = data_meta(data_dir)
    if config.img_dim != int(meta["feat_dim"]) or config.num_region_classes != len(meta["class_names"]):
        raise ValueError(
            f"model {model_dir} takes {config.img_dim}-d regions and {config.num_region_classes} classes but "
            f"{data_dir} has {meta['feat_dim']}-d features and {len(meta['class_names'])} classes; "
            "point model.dir at a model built for this data (or a new directory to build one)"
        )


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer files (vocab.txt / tokenizer.json); models built by "
            "`lottery model init` carry their BERT's tokenizer"
        ) from err
