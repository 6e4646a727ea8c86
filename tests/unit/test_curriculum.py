"""The scene-complexity schedule: each step reads the scenes its phase names, the same on resume."""

from __future__ import annotations

import pytest

from lottery.config import ConfigError, DataConfig, ScenePhase, load_config
from lottery.data.pipeline import eval_batches, shard_urls
from lottery.train.assets import ensure_data
from lottery.train.curriculum import schedule, stage_at


def _data(tmp_path) -> DataConfig:
    return DataConfig(
        dir=str(tmp_path / "shapes"),
        train_samples=64,
        val_samples=16,
        samples_per_shard=32,
        feat_dim=32,
        min_objects=4,
        max_objects=6,
        curriculum=(
            ScenePhase(steps=3, train_samples=64),
            ScenePhase(steps=2, max_objects=3, train_samples=64),
        ),
    )


def test_schedule_gives_each_step_its_phase_then_the_main_scenes(tmp_path):
    stages = schedule(_data(tmp_path))
    dirs = [stage_at(stages, step).data for step in range(1, 9)]
    assert [(d.min_objects, d.max_objects) for d in dirs] == [(1, 1)] * 3 + [(1, 3)] * 2 + [(4, 6)] * 3
    assert dirs[0].dir.endswith("shapes-phase0-o1-1-m1") and dirs[-1].dir == str(tmp_path / "shapes")


def test_phase_shards_hold_scenes_of_the_sizes_the_phase_names(tmp_path):
    stages = schedule(_data(tmp_path))
    for stage, (low, high) in zip(stages, [(1, 1), (1, 3), (4, 6)], strict=True):
        ensure_data(stage.data)
        counts = [
            len(ex.meta["scene"]["objects"])
            for batch in eval_batches(
                shard_urls(stage.data.dir, "train"),
                tokenizer_dir=_tokenizer(),
                max_text_len=40,
                batch_size=16,
            )
            for ex in batch
        ]
        assert len(counts) == 64 and min(counts) >= low and max(counts) <= high
        assert (high == low) or len(set(counts)) > 1


def test_curriculum_reads_from_yaml_overrides_and_refuses_bad_phases():
    config = load_config(None, ["data.curriculum=[{steps: 300}, {steps: 100, max_objects: 3}]"])
    assert config.data.curriculum == (ScenePhase(steps=300), ScenePhase(steps=100, max_objects=3))
    with pytest.raises(ConfigError, match=r"data.curriculum\[0\]"):
        load_config(None, ["data.curriculum=[{stepz: 3}]"])


def _tokenizer():
    from lottery.models.uniter.from_bert import resolve_bert_dir

    return resolve_bert_dir("minilm")
