"""`lottery data convert --from uniter`: tiny UNITER image and text LMDBs, written as UNITER writes them
(msgpack with msgpack_numpy arrays; lz4-compressed text examples; image values plain, lz4-compressed
or np.savez_compressed), converted into shards and read back by the project's own reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import lmdb
import lz4.frame
import msgpack
import msgpack_numpy
import numpy as np
import pytest
from cli_runner import run_cli

from lottery.data import pipeline
from lottery.data.convert import writer
from lottery.data.convert.uniter_lmdb import convert_uniter
from lottery.data.schema import META_NAME, ShardError

D, C = 8, 1601
REGIONS = {  # image file name -> number of regions
    "coco_train2014_000000000009.npz": 3,
    "coco_train2014_000000000025.npz": 2,
    "coco_train2014_000000000030.npz": 4,
    "coco_train2014_000000000042.npz": 1,  # no text names it
}
# two text DBs, as UNITER pre-trains on several per image DB; "sent" is the referring-expression key
TEXTS_1 = {
    "101": ("coco_train2014_000000000009.npz", {"raw": "two giraffes eat."}),
    "102": ("coco_train2014_000000000030.npz", {"raw": "a kitchen"}),
    "103": ("coco_train2014_000000000009.npz", {"raw": "giraffes near a tree."}),
    "104": ("coco_val2014_000000000001.npz", {"raw": "an image of another DB"}),
}
TEXTS_2 = {
    "7": ("coco_train2014_000000000025.npz", {"sent": "the left dog"}),
    "8": ("coco_train2014_000000000009.npz", {"sent": "tallest giraffe"}),
    "nlvr-1": (["coco_train2014_000000000025.npz", "coco_train2014_000000000030.npz"], {"sentence": "x"}),
}
GROUPED = {
    "coco_train2014_000000000009.npz": ["two giraffes eat.", "giraffes near a tree.", "tallest giraffe"],
    "coco_train2014_000000000025.npz": ["the left dog"],
    "coco_train2014_000000000030.npz": ["a kitchen"],
}


def image_dump(name: str, feat_dtype: str = "f2") -> dict[str, np.ndarray]:
    """What UNITER's convert_imgdir.py stores: float32 arrays cast to float16 (features may stay f4)."""
    n = REGIONS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    x1, y1 = rng.uniform(0, 0.5, n), rng.uniform(0, 0.5, n)
    x2, y2 = x1 + rng.uniform(0, 0.5, n), y1 + rng.uniform(0, 0.5, n)
    norm_bb = np.column_stack([x1, y1, x2, y2, x2 - x1, y2 - y1]).astype("f2")
    if name.endswith("09.npz"):
        norm_bb[0] = [0.25, 0.5, 0.75, 1.0, 0.5, 0.5]
    soft = rng.dirichlet(np.ones(C), n).astype("f2")
    return {
        "features": rng.normal(0, 2, (n, D)).astype(feat_dtype),
        "norm_bb": norm_bb,
        "conf": soft.max(1),
        "soft_labels": soft,
    }


def pack(value: dict, variant: str) -> bytes:
    if variant == "npz":  # UNITER's own *_compressed image DBs
        stream = io.BytesIO()
        np.savez_compressed(stream, **value)
        return stream.getvalue()
    packed = msgpack.packb(value, default=msgpack_numpy.encode, use_bin_type=True)
    return lz4.frame.compress(packed) if variant == "lz4" else packed


def write_db(path: Path, items: dict[str, bytes]) -> None:
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key.encode(), value)
    env.close()


def write_img_db(path: Path, variant: str, dumps: dict[str, dict] | None = None) -> None:
    dumps = dumps or {name: image_dump(name, "f4" if variant == "plain" else "f2") for name in REGIONS}
    items = {name: pack(dump, variant) for name, dump in dumps.items()}
    items["__keys__"] = json.dumps(list(REGIONS)).encode()
    write_db(path, items)


def write_txt_db(path: Path, texts: dict[str, tuple]) -> None:
    items = {}
    for txt_id, (img, fields) in texts.items():
        example = {**fields, "input_ids": [101, 2000, 102], "img_fname": img}
        items[txt_id] = lz4.frame.compress(msgpack.packb(example, use_bin_type=True))
    write_db(path, items)
    (path / "txt2img.json").write_text(json.dumps({txt_id: img for txt_id, (img, _) in texts.items()}))
    img2txts: dict[str, list[str]] = {}
    for txt_id, (img, _) in texts.items():
        for one in img if isinstance(img, list) else [img]:
            img2txts.setdefault(one, []).append(txt_id)
    (path / "img2txts.json").write_text(json.dumps(img2txts))


@pytest.fixture
def dbs(tmp_path) -> dict[str, Path]:
    paths = {"txt1": tmp_path / "coco_train.db", "txt2": tmp_path / "refcoco_train.db"}
    write_txt_db(paths["txt1"], TEXTS_1)
    write_txt_db(paths["txt2"], TEXTS_2)
    return paths


def read_back(out: Path) -> list[dict]:
    urls = pipeline.shard_urls(out, "train")
    return [pipeline._checked(raw) for raw in pipeline._read_shards({"url": url} for url in urls)]


def convert(img_db: Path, dbs: dict[str, Path], out: Path, per_shard: int = 2):
    return convert_uniter(img_db, [dbs["txt1"], dbs["txt2"]], out, split="train", samples_per_shard=per_shard)


@pytest.mark.parametrize("variant", ["plain", "lz4", "npz"])
def test_values_texts_and_meta_match_the_source(tmp_path, dbs, variant):
    img_db = tmp_path / f"img_{variant}"
    write_img_db(img_db, variant)
    out = tmp_path / "shards"
    result, skipped = convert(img_db, dbs, out)
    assert (result.samples, result.shards) == (3, 2)
    assert skipped == {"images_without_texts": 1, "texts_without_image": 1, "pair_texts": 1}
    samples = read_back(out)
    assert [s["json"]["id"] for s in samples] == list(GROUPED)  # LMDB key order, the textless one left out
    for sample in samples:
        name = sample["json"]["id"]
        source = image_dump(name, "f4" if variant == "plain" else "f2")
        assert sample["__key__"] == name.removesuffix(".npz") and sample["json"]["texts"] == GROUPED[name]
        assert sample["feat.npy"].dtype == np.float16
        np.testing.assert_array_equal(sample["feat.npy"], source["features"].astype(np.float16))
        np.testing.assert_allclose(sample["feat.npy"], source["features"], rtol=1e-3, atol=1e-3)
        bb = source["norm_bb"].astype(np.float32)
        np.testing.assert_array_equal(sample["box.npy"], np.column_stack([bb, bb[:, 4] * bb[:, 5]]))
        np.testing.assert_array_equal(sample["soft.npy"], source["soft_labels"])
    np.testing.assert_array_equal(samples[0]["box.npy"][0], [0.25, 0.5, 0.75, 1.0, 0.5, 0.5, 0.25])
    assert samples[0]["json"]["text_ids"] == ["101", "103", "8"]
    meta = json.loads((out / META_NAME).read_text())
    assert meta["feat_dim"] == D and len(meta["class_names"]) == C and meta["soft_labels"] is True
    source = meta["splits"]["train"]["source"]
    assert meta["counts"] == {"train": 3} and source["img_db"] == str(img_db.resolve())
    assert source["format"] == "uniter" and len(source["txt_db"]) == 2


def without(dump: dict, field: str) -> dict:
    return {k: v for k, v in dump.items() if k != field}


BAD = "coco_train2014_000000000030.npz"


@pytest.mark.parametrize(
    ("variant", "value", "named"),
    [
        ("plain", lambda: without(image_dump(BAD), "norm_bb"), "field 'norm_bb' is missing"),
        ("lz4", lambda: without(image_dump(BAD), "soft_labels"), "field 'soft_labels' is missing"),
        ("plain", lambda: {**image_dump(BAD), "norm_bb": image_dump(BAD)["norm_bb"][:2]}, "'norm_bb' has 2"),
        ("plain", lambda: b"\xc1 not msgpack", "does not decode"),
        ("lz4", lambda: lz4.frame.compress(pack(image_dump(BAD), "plain"))[:-9], "does not decode"),
    ],
)
def test_a_corrupt_record_names_db_key_and_field_and_leaves_no_output(tmp_path, dbs, variant, value, named):
    img_db = tmp_path / "img"
    write_img_db(img_db, variant)
    bad = value()
    env = lmdb.open(str(img_db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(BAD.encode(), bad if isinstance(bad, bytes) else pack(bad, variant))
    env.close()
    out = tmp_path / "shards"
    with pytest.raises(ShardError) as caught:
        convert(img_db, dbs, out)
    message = str(caught.value)
    assert f"UNITER image DB {img_db}, key {BAD!r}" in message and named in message, message
    assert not out.exists()


def test_a_text_without_raw_text_names_db_key_and_fields(tmp_path, dbs):
    img_db = tmp_path / "img"
    write_img_db(img_db, "plain")
    write_txt_db(dbs["txt2"], {**TEXTS_2, "8": (TEXTS_2["8"][0], {"toked": ["tall"]})})
    with pytest.raises(ShardError) as caught:
        convert(img_db, dbs, tmp_path / "shards")
    message = str(caught.value)
    assert f"UNITER text DB {dbs['txt2']}, key '8'" in message and "'raw'" in message
    assert "['img_fname', 'input_ids', 'toked']" in message and not (tmp_path / "shards").exists()


def test_a_killed_conversion_resumes_without_rewriting_finished_shards(tmp_path, dbs, monkeypatch):
    img_db = tmp_path / "img"
    write_img_db(img_db, "lz4")
    real_write, calls, kill = writer.write_shard, [], {"on_call": 2}

    def dies_on_second_shard(plan, path, start, stop):
        calls.append(path.name)
        if len(calls) == kill["on_call"]:
            raise RuntimeError("killed")
        real_write(plan, path, start, stop)

    monkeypatch.setattr(writer, "write_shard", dies_on_second_shard)
    out = tmp_path / "shards"
    with pytest.raises(RuntimeError, match="killed"):
        convert(img_db, dbs, out, per_shard=1)
    first = writer.work_dir(out) / "train-000000.tar"
    assert not out.exists() and first.is_file()
    before = first.stat()
    calls.clear()
    kill["on_call"] = 0
    result, _ = convert(img_db, dbs, out, per_shard=1)
    assert calls == ["train-000001.tar", "train-000002.tar"] and result.reused == 1
    after = (out / "train-000000.tar").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    whole = tmp_path / "whole"
    convert(img_db, dbs, whole, per_shard=1)
    names = sorted(p.name for p in whole.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    assert all((out / n).read_bytes() == (whole / n).read_bytes() for n in names)


run = run_cli


def test_cli_converts_and_refuses_bad_input_in_one_line(tmp_path, dbs, capsys):
    img_db = tmp_path / "img"
    write_img_db(img_db, "npz")
    out = tmp_path / "shards"
    args = ["data", "convert", "--from", "uniter", "--out", str(out), "--split", "train", "--img-db"]
    code, stdout, _ = run(capsys, *args, str(img_db), "--txt-db", str(dbs["txt1"]), str(dbs["txt2"]))
    assert code == 0 and "3 train sample(s) in 1 shard(s)" in stdout and "1 image-pair" in stdout
    assert len(read_back(out)) == 3
    for argv, start in [
        ([*args, str(img_db)], "lottery: --from uniter needs --txt-db"),
        ([*args, str(tmp_path / "nodb"), "--txt-db", str(dbs["txt1"])], "lottery: --img-db "),
        ([*args, str(img_db), "--txt-db", str(tmp_path / "nodb")], "lottery: --txt-db "),
    ]:
        code, _, err = run(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(start), (argv, code, err)
