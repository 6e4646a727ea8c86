"""A job's shapes world must be the one its `data.*` asks for: reused when it is, refused when it is not.

Defect 10: the world was rebuilt only when meta.json was missing, so a changed data.seed (or size, or
feat_dim) with the same data.dir trained silently on the old scenes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lottery.config import ConfigError, DataConfig
from lottery.data.shards import ShapesConfig, build_shapes
from lottery.train.assets import ensure_data


def small(directory: Path, **changes: object) -> DataConfig:
    base = DataConfig(dir=str(directory), train_samples=24, val_samples=8, samples_per_shard=12, feat_dim=16)
    return replace(base, **changes)


@pytest.fixture
def built(tmp_path) -> Path:
    out = ensure_data(small(tmp_path / "shapes"))
    assert (out / "meta.json").is_file()
    return out


def _shards(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.glob("*.tar"))}


def test_the_same_settings_reuse_the_world_as_it_is(built):
    before = _shards(built)
    ensure_data(small(built))
    assert _shards(built) == before


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"seed": 1}, "data.seed built 0, asked 1"),
        ({"train_samples": 36}, "data.train_samples built 24, asked 36"),
        (
            {"feat_dim": 32, "max_objects": 5},
            "data.feat_dim built 16, asked 32, data.max_objects built 10, asked 5",
        ),
    ],
    ids=["seed", "size", "feat_dim+objects"],
)
def test_other_settings_on_the_same_dir_are_refused_in_one_line_naming_dir_and_fields(built, changes, named):
    before = _shards(built)
    with pytest.raises(ConfigError) as caught:
        ensure_data(small(built, **changes))
    message = str(caught.value)
    assert (
        "\n" not in message and f"data.dir {built} holds a shapes world built from other settings" in message
    )
    assert named in message
    assert "set data.dir to another directory, or delete" in message
    assert _shards(built) == before, "the old world must be left as it was"


def test_a_world_recorded_before_a_setting_existed_counts_it_at_its_default(built):
    """meta.json of an older build may not name feature_noise: that build used the default."""
    meta_path = built / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["feature_noise"]
    meta_path.write_text(json.dumps(meta))
    ensure_data(small(built))


def test_an_unreadable_meta_is_refused_naming_the_file(built):
    (built / "meta.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"data.dir: .*meta.json: unreadable shapes meta"):
        ensure_data(small(built))


def test_a_world_written_by_lottery_data_shapes_is_checked_the_same_way(tmp_path):
    out = build_shapes(tmp_path / "w", ShapesConfig(seed=3, train_samples=24, val_samples=8, feat_dim=16))
    ensure_data(small(out, seed=3, samples_per_shard=1000))
    with pytest.raises(ConfigError, match="data.seed built 3, asked 0"):
        ensure_data(small(out, samples_per_shard=1000))


def test_a_model_dir_made_for_other_data_is_refused_naming_both(built, tmp_path):
    from tiny import TINY, save_tiny

    from lottery.config import ModelConfig
    from lottery.train.assets import ensure_model

    model_dir = save_tiny(tmp_path / "model")  # 16-d regions, 5 classes
    meta = json.loads((built / "meta.json").read_text())
    assert int(meta["feat_dim"]) == TINY.img_dim and len(meta["class_names"]) != TINY.num_region_classes
    with pytest.raises(ConfigError, match=rf"model.dir: model {model_dir} takes 16-d regions and 5 classes"):
        ensure_model(ModelConfig(dir=str(model_dir)), built)
