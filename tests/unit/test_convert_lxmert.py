"""`lottery data convert --from lxmert`: a tiny bottom-up-attention TSV, written as LXMERT's extraction
writes it (csv with tabs, base64 of raw numpy buffers, CRLF lines), converted into shards and read
back by the project's own reader."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

from lottery.data import pipeline
from lottery.data.convert import writer
from lottery.data.convert.lxmert_tsv import FIELDNAMES, convert_lxmert
from lottery.data.schema import META_NAME, ShardError

D = 8
W, H = 100.0, 200.0
# img_id -> pixel boxes x1, y1, x2, y2 in a W x H image; the second box of the first image leaves it
IMAGES: dict[str, np.ndarray] = {
    "COCO_train2014_000000000009": np.array([[10, 20, 50, 60], [-5, 10, 110, 60], [0, 0, 100, 200]], "f4"),
    "vg.2345": np.array([[25, 50, 75, 150], [1, 2, 3, 4]], "f4"),
    "COCO_train2014_000000000025": np.array([[0, 0, 10, 10]], "f4"),  # has no caption
    "COCO_train2014_000000000030": np.array([[5, 5, 95, 195], [40, 40, 60, 80], [0, 100, 50, 200]], "f4"),
}
CAPTIONS_A = [
    {
        "img_id": "COCO_train2014_000000000009",
        "sentf": {"vg": ["a giraffe"], "mscoco": ["two giraffes eat.", "giraffes near a tree."]},
        "labelf": {"vqa": [{"yes": 1.0}]},
    },
    {"img_id": "vg.2345", "sentf": {"vg": ["a red bus"]}, "labelf": {}},
    {"img_id": "not_in_the_tsv", "sentf": {"mscoco": ["nothing"]}, "labelf": {}},
]
CAPTIONS_B = [
    {"img_id": "COCO_train2014_000000000030", "sentf": {"mscoco": ["a kitchen"]}, "labelf": {}},
    {"img_id": "COCO_train2014_000000000009", "sentf": {"mscoco": ["tall animals"]}, "labelf": {}},
]
TEXTS = {
    "COCO_train2014_000000000009": [
        "two giraffes eat.",
        "giraffes near a tree.",
        "a giraffe",
        "tall animals",
    ],
    "vg.2345": ["a red bus"],
    "COCO_train2014_000000000030": ["a kitchen"],
}


def features(img_id: str) -> np.ndarray:
    seed = sum(map(ord, img_id))
    return np.random.default_rng(seed).normal(0, 3, (len(IMAGES[img_id]), D)).astype("f4")


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def tsv_row(img_id: str) -> list[str]:
    boxes = IMAGES[img_id]
    n = len(boxes)
    return [
        img_id,
        str(int(H)),
        str(int(W)),
        b64(np.arange(n, dtype="<i8")),
        b64(np.full(n, 0.5, "<f4")),
        b64(np.arange(n, dtype="<i8") + 7),
        b64(np.full(n, 0.25, "<f4")),
        str(n),
        b64(boxes.astype("<f4")),
        b64(features(img_id).astype("<f4")),
    ]


@pytest.fixture
def source(tmp_path) -> dict[str, Path]:
    tsv = tmp_path / "in" / "train_obj36.tsv"
    tsv.parent.mkdir()
    with open(tsv, "w", newline="") as f:
        out = csv.writer(f, delimiter="\t")  # LXMERT's extractor: csv.DictWriter, CRLF line ends
        for img_id in IMAGES:
            out.writerow(tsv_row(img_id))
    caps_a, caps_b = tmp_path / "in" / "mscoco_train.json", tmp_path / "in" / "vgnococo.json"
    caps_a.write_text(json.dumps(CAPTIONS_A))
    caps_b.write_text(json.dumps(CAPTIONS_B))
    return {"tsv": tsv, "captions": [caps_a, caps_b]}


def read_back(out: Path) -> list[dict]:
    """The samples as the training reader decodes and validates them, in shard order."""
    urls = pipeline.shard_urls(out, "train")
    return [pipeline._checked(raw) for raw in pipeline._read_shards({"url": url} for url in urls)]


def expected_box(boxes: np.ndarray) -> np.ndarray:
    corners = np.clip(boxes.astype(np.float64) / [W, H, W, H], 0, 1)
    w, h = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
    return np.column_stack([corners, w, h, w * h])


def test_values_texts_and_meta_match_the_source(tmp_path, source):
    out = tmp_path / "shards"
    result, skipped = convert_lxmert(
        source["tsv"], source["captions"], out, split="train", samples_per_shard=2
    )
    assert (result.samples, result.shards, skipped) == (3, 2, 1)
    samples = read_back(out)
    assert [s["json"]["id"] for s in samples] == list(TEXTS)  # TSV order, the uncaptioned one left out
    for sample in samples:
        img_id = sample["json"]["id"]
        assert "." not in sample["__key__"] and sample["json"]["split"] == "train"
        assert sample["json"]["texts"] == TEXTS[img_id]
        assert sample["feat.npy"].dtype == np.float16
        np.testing.assert_array_equal(sample["feat.npy"], features(img_id).astype(np.float16))
        np.testing.assert_allclose(sample["feat.npy"], features(img_id), rtol=1e-3, atol=1e-3)
        assert sample["box.npy"].dtype == np.float32
        np.testing.assert_allclose(sample["box.npy"], expected_box(IMAGES[img_id]), rtol=0, atol=1e-7)
        assert "soft.npy" not in sample
    assert samples[1]["__key__"] == "vg_2345"
    first = samples[0]["box.npy"]
    np.testing.assert_allclose(first[0], [0.1, 0.1, 0.5, 0.3, 0.4, 0.2, 0.08], atol=1e-7)
    np.testing.assert_allclose(first[1], [0.0, 0.05, 1.0, 0.3, 1.0, 0.25, 0.25], atol=1e-7)  # clipped
    meta = json.loads((out / META_NAME).read_text())
    train = meta["splits"]["train"]
    assert meta["feat_dim"] == D and meta["counts"] == {"train": 3} and train["skipped_without_texts"] == 1
    assert train["source"]["format"] == "lxmert" and train["source"]["tsv"] == str(source["tsv"].resolve())
    assert train["source"]["captions"] == [str(p.resolve()) for p in source["captions"]]
    assert not writer.work_dir(out).exists()


def test_a_val_split_converted_into_the_same_directory_is_added_beside_train(tmp_path, source):
    """Training reads train and val from one directory: the second split joins the first."""
    out = tmp_path / "shards"
    convert_lxmert(source["tsv"], source["captions"], out, split="train", samples_per_shard=2)
    train_files = sorted(p.name for p in out.glob("train-*.tar"))
    convert_lxmert(source["tsv"], source["captions"], out, split="val", samples_per_shard=2)
    meta = json.loads((out / META_NAME).read_text())
    assert meta["counts"] == {"train": 3, "val": 3} and set(meta["splits"]) == {"train", "val"}
    assert sorted(p.name for p in out.glob("train-*.tar")) == train_files
    assert len(pipeline.shard_urls(out, "val")) == 2 and len(pipeline.shard_urls(out, "train")) == 2
    with pytest.raises(FileExistsError, match="already holds a finished val split; pass --overwrite"):
        convert_lxmert(source["tsv"], source["captions"], out, split="val")
    convert_lxmert(source["tsv"], source["captions"], out, split="val", samples_per_shard=3, overwrite=True)
    meta = json.loads((out / META_NAME).read_text())
    assert len(meta["shards"]["val"]) == 1 and meta["shards"]["train"] == train_files
    assert sorted(p.name for p in out.glob("val-*.tar")) == meta["shards"]["val"]  # the old val shards gone
    assert not writer.work_dir(out).exists()


def corrupt(row: list[str], how: str) -> list[str]:
    row = list(row)
    if how == "truncated base64":
        row[FIELDNAMES.index("features")] = row[FIELDNAMES.index("features")][:-3]
    elif how == "non-positive img_h":
        row[FIELDNAMES.index("img_h")] = "0"
    elif how == "too few boxes":
        row[FIELDNAMES.index("boxes")] = b64(IMAGES["vg.2345"][:1])
    elif how == "missing column":
        row = row[:-1]
    return row


@pytest.mark.parametrize(
    ("how", "field"),
    [
        ("truncated base64", "'features'"),
        ("non-positive img_h", "'img_h'"),
        ("too few boxes", "'boxes'"),
        ("missing column", "9 columns"),
    ],
)
def test_a_bad_record_names_file_line_id_and_field_and_leaves_no_output(tmp_path, source, how, field):
    with open(source["tsv"], "w", newline="") as f:
        out = csv.writer(f, delimiter="\t")
        for img_id in IMAGES:
            out.writerow(corrupt(tsv_row(img_id), how) if img_id == "vg.2345" else tsv_row(img_id))
    out_dir = tmp_path / "shards"
    with pytest.raises(ShardError) as caught:
        convert_lxmert(source["tsv"], source["captions"], out_dir, split="train", samples_per_shard=1)
    message = str(caught.value)
    assert str(source["tsv"]) in message and "line 2" in message and "'vg.2345'" in message
    assert field in message
    assert not out_dir.exists()


def test_a_killed_conversion_resumes_without_rewriting_finished_shards(tmp_path, source, monkeypatch):
    out = tmp_path / "shards"
    real_write = writer.write_shard
    calls: list[str] = []
    kill = {"on_call": 2}

    def dies_on_second_shard(plan, path, start, stop):
        calls.append(path.name)
        if len(calls) == kill["on_call"]:
            raise RuntimeError("killed")
        real_write(plan, path, start, stop)

    monkeypatch.setattr(writer, "write_shard", dies_on_second_shard)
    with pytest.raises(RuntimeError, match="killed"):
        convert_lxmert(source["tsv"], source["captions"], out, split="train", samples_per_shard=1)
    work = writer.work_dir(out)
    assert not out.exists() and work.name.startswith(".")
    assert sorted(p.name for p in work.glob("*.tar")) == ["train-000000.tar"]
    before = (work / "train-000000.tar").stat()
    (work / ".train-000001.tar.999.dead.tmp").write_bytes(b"half a shard")  # as a SIGKILL leaves it

    calls.clear()
    kill["on_call"] = 0  # the rerun is not killed
    result, _ = convert_lxmert(source["tsv"], source["captions"], out, split="train", samples_per_shard=1)
    assert calls == ["train-000001.tar", "train-000002.tar"] and result.reused == 1
    after = (out / "train-000000.tar").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not work.exists() and not list(out.glob(".*"))

    whole = tmp_path / "whole"
    convert_lxmert(source["tsv"], source["captions"], whole, split="train", samples_per_shard=1)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    for name in sorted(p.name for p in whole.iterdir()):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


def test_changed_input_restarts_instead_of_mixing_two_conversions(tmp_path, source, monkeypatch):
    out = tmp_path / "shards"
    real_write = writer.write_shard

    def dies_after_first(plan, path, start, stop):
        if path.name != "train-000000.tar":
            raise RuntimeError("killed")
        real_write(plan, path, start, stop)

    monkeypatch.setattr(writer, "write_shard", dies_after_first)
    with pytest.raises(RuntimeError):
        convert_lxmert(source["tsv"], source["captions"], out, split="train", samples_per_shard=1)
    monkeypatch.setattr(writer, "write_shard", real_write)
    source["captions"][0].write_text(json.dumps(CAPTIONS_A[1:]))  # the first image loses its captions
    result, skipped = convert_lxmert(
        source["tsv"], source["captions"], out, split="train", samples_per_shard=1
    )
    assert result.reused == 0 and skipped == 1
    samples = read_back(out)
    assert [s["json"]["id"] for s in samples] == list(TEXTS)
    assert samples[0]["json"]["texts"] == ["tall animals"]  # from the new captions, not the old shard


run = run_cli


def test_cli_converts_and_refuses_bad_input_in_one_line(tmp_path, source, capsys):
    out = tmp_path / "shards"
    args = ["data", "convert", "--from", "lxmert", "--out", str(out), "--split", "val", "--tsv"]
    inputs = [str(source["tsv"]), "--captions", *map(str, source["captions"])]
    code, stdout, _ = run(capsys, *args, *inputs, "--samples-per-shard", "2")
    assert code == 0 and "3 val sample(s) in 2 shard(s)" in stdout and "1 image(s)" in stdout
    assert len(pipeline.shard_urls(out, "val")) == 2

    for argv, start in [
        ([*args, str(tmp_path / "missing.tsv"), *inputs[1:]], "lottery: --tsv "),
        ([*args, *inputs], "lottery: --out: "),  # a finished dataset is not replaced unasked
        ([*args, *inputs, "--img-db", str(tmp_path)], "lottery: --img-db: not an input of --from lxmert"),
    ]:
        code, _, err = run(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(start), (argv, code, err)

    code, _, _ = run(capsys, *args, *inputs, "--overwrite", "--samples-per-shard", "3")
    assert code == 0 and len(pipeline.shard_urls(out, "val")) == 1

    source["tsv"].write_text(source["tsv"].read_text().replace("\t200\t", "\t-1\t", 1))
    code, _, err = run(capsys, *args, *inputs, "--out", str(tmp_path / "other"))
    lines = [line for line in err.strip().splitlines() if "%|" not in line]  # progress lines aside
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lottery: data refused: LXMERT TSV ")
    assert "'img_h'" in lines[0] and not (tmp_path / "other").exists()


def test_a_split_that_disagrees_with_the_dataset_is_refused_and_the_dataset_kept(tmp_path, source):
    out = tmp_path / "shards"
    convert_lxmert(source["tsv"], source["captions"], out, split="train", samples_per_shard=2)
    meta = json.loads((out / META_NAME).read_text())
    (out / META_NAME).write_text(json.dumps({**meta, "feat_dim": 2048}))  # as if train had 2048-d features
    with pytest.raises(writer.ConvertError, match=r"feat_dim=2048, but this val split has feat_dim=8"):
        convert_lxmert(source["tsv"], source["captions"], out, split="val", samples_per_shard=2)
    assert json.loads((out / META_NAME).read_text())["shards"].keys() == {"train"}
    assert not list(out.glob("val-*.tar"))
