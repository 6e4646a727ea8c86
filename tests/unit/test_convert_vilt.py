"""`lottery data convert --from vilt`: tiny Arrow files in ViLT's three layouts (captions, VQA v2, NLVR2),
written as ViLT's `write_*.py` write them (one row per image, the image file's bytes in a binary column,
an IPC file), converted into image-only shards and read back by the project's own reader."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from cli_runner import run_cli
from PIL import Image

from lottery.data import pipeline
from lottery.data.convert import writer
from lottery.data.convert.vilt_arrow import PYARROW_HINT, convert_vilt
from lottery.data.patches import PatchGrid
from lottery.data.schema import META_NAME, ShardError


def image_bytes(fmt: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    stream = io.BytesIO()
    Image.new("RGB", size, colour).save(stream, format=fmt)
    return stream.getvalue()


PNG_A = image_bytes("PNG", (12, 8), (200, 10, 10))
JPG_B = image_bytes("JPEG", (16, 16), (10, 200, 10))
JPG_C = image_bytes("JPEG", (9, 20), (10, 10, 200))
PNG_D = image_bytes("PNG", (5, 5), (90, 90, 90))

# ViLT's Karpathy COCO layout, plus VG's per-phrase `x` column (copied through as a plain column)
CAPTIONS = {
    "image": [PNG_A, JPG_B, JPG_C, PNG_D, JPG_B],
    "caption": [
        ["a red square.", "red."],
        ["a green square", "  "],  # the blank caption is dropped
        [],  # no caption: the row is skipped
        ["grey"],
        ["a copy of the green one"],
    ],
    "image_id": [
        "COCO_val2014_000000000001.jpg",
        "COCO_val2014_000000000002.jpg",
        "COCO_val2014_000000000003.jpg",
        "COCO_val2014_000000000004.jpg",
        "vg.2345.jpg",
    ],
    "split": ["val", "restval", "val", "val", "val"],
    "x": [[1, 2], [3], [], [4], [5]],
}
CAPTION_KEYS = [
    "COCO_val2014_000000000001",
    "COCO_val2014_000000000002",
    "COCO_val2014_000000000004",
    "vg_2345",
]
CAPTION_ROWS = [0, 1, 3, 4]  # the source row of each sample

VQA = {
    "image": [JPG_B, PNG_A],
    "questions": [["what colour?", "is it square?"], ["how many?"]],
    "answers": [[["green", "yellow"], ["yes"]], [["1"]]],
    "answer_labels": [[[7, 9], [0]], [[3]]],
    "answer_scores": [[[1.0, 0.3], [1.0]], [[0.9]]],
    "image_id": [393225, 42],
    "question_id": [[393225000, 393225001], [42000]],
    "split": ["train", "train"],
}
# ViLT's NLVR2 layout: no split or image_id, the pair's identifier, "True"/"False" answers
NLVR2 = {
    "image_0": [PNG_A, PNG_D],
    "image_1": [JPG_C, PNG_A],  # a ".png" of NLVR2 that is a JPEG: the signature decides
    "questions": [["The left image is red.", "Both are grey."], ["There is a grey square."]],
    "answers": [["True", "False"], ["True"]],
    "identifier": ["dev-850-0", "dev-851-2"],
}


def write_arrow(path: Path, columns: dict, batch_rows: int | None = None) -> Path:
    """An Arrow IPC file as ViLT writes one (RecordBatchFileWriter.write_table); `batch_rows` splits it
    into several record batches, as a file written in parts is."""
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
        out.write_table(table, max_chunksize=batch_rows)
    return path


@pytest.fixture
def arrows(tmp_path) -> dict[str, Path]:
    src = tmp_path / "arrows"
    return {
        "captions": write_arrow(src / "coco_caption_karpathy_val.arrow", CAPTIONS, batch_rows=2),
        "vqa": write_arrow(src / "vqav2_train.arrow", VQA),
        "nlvr2": write_arrow(src / "nlvr2_dev.arrow", NLVR2),
    }


def read_back(out: Path, split: str = "train") -> list[dict]:
    """The samples as the training reader decodes and validates them, in shard order."""
    urls = pipeline.shard_urls(out, split)
    return [pipeline._checked(raw) for raw in pipeline._read_shards({"url": url} for url in urls)]


def image_of(sample: dict) -> tuple[str, bytes]:
    fields = [f for f in ("jpg", "png") if f in sample]
    assert len(fields) == 1 and "feat.npy" not in sample and "box.npy" not in sample, sorted(sample)
    return fields[0], sample[fields[0]]


def test_captions_keep_the_image_bytes_texts_and_source_fields(tmp_path, arrows):
    out = tmp_path / "shards"
    result, skipped = convert_vilt([arrows["captions"]], out, split="train", samples_per_shard=3)
    assert (result.samples, result.shards) == (4, 2)
    assert skipped == {"rows_without_texts": 1, "dropped_columns": {}}
    samples = read_back(out)
    assert [s["__key__"] for s in samples] == CAPTION_KEYS  # row order across the file's record batches
    for sample, row in zip(samples, CAPTION_ROWS, strict=True):
        field, data = image_of(sample)
        assert data == CAPTIONS["image"][row] and field == ("png" if data[:1] == b"\x89" else "jpg")
        meta = sample["json"]
        assert meta["texts"] == [c for c in CAPTIONS["caption"][row] if c.strip()]
        assert meta["id"] == meta["image_id"] == CAPTIONS["image_id"][row]
        assert meta["split"] == "train" and meta["vilt_split"] == CAPTIONS["split"][row]
        assert meta["table_name"] == "coco_caption_karpathy_val" and meta["x"] == CAPTIONS["x"][row]
    meta = json.loads((out / META_NAME).read_text())
    assert meta["feat_dim"] is None and meta["class_names"] == [] and meta["soft_labels"] is False
    assert meta["image_field"] == ["jpg", "png"] and meta["counts"] == {"train": 4}
    source = meta["splits"]["train"]["source"]
    assert source == {"format": "vilt", "layout": "captions", "arrow": [str(arrows["captions"].resolve())]}
    assert not writer.work_dir(out).exists()


def test_vqa_questions_are_the_texts_and_answers_line_up(tmp_path, arrows):
    test_split = {  # ViLT's test splits: no answers, so pandas types the answer columns list<null>
        "image": [PNG_D],
        "questions": [["what is it?"]],
        "answers": [[]],
        "answer_labels": [[]],
        "answer_scores": [[]],
        "image_id": [7],
        "question_id": [[7001]],
        "split": ["test"],
    }
    test_file = write_arrow(tmp_path / "arrows" / "vqav2_test.arrow", test_split)
    out = tmp_path / "shards"
    result, _ = convert_vilt([arrows["vqa"], test_file], out, split="val", samples_per_shard=2)
    samples = read_back(out, "val")
    assert result.samples == 3 and [s["__key__"] for s in samples] == ["393225", "42", "7"]
    for sample, row in zip(samples[:2], range(2), strict=True):
        assert image_of(sample)[1] == VQA["image"][row]
        meta = sample["json"]
        assert meta["texts"] == meta["questions"] == VQA["questions"][row]
        assert meta["image_id"] == VQA["image_id"][row] and meta["id"] == str(VQA["image_id"][row])
        for name in ("answers", "answer_labels", "answer_scores", "question_id"):
            assert meta[name] == VQA[name][row], name
    assert samples[2]["json"]["answers"] == [] and samples[2]["json"]["question_id"] == [7001]
    assert json.loads((out / META_NAME).read_text())["splits"]["val"]["source"]["layout"] == "vqa"


def test_nlvr2_gives_one_sample_per_image_with_the_pairs_statements_and_labels(tmp_path, arrows):
    out = tmp_path / "shards"
    result, _ = convert_vilt([arrows["nlvr2"]], out, split="val")
    samples = read_back(out, "val")
    keys = ["dev-850-0-img0", "dev-850-0-img1", "dev-851-2-img0", "dev-851-2-img1"]
    assert result.samples == 4 and [s["__key__"] for s in samples] == keys
    for i, sample in enumerate(samples):
        row, side = divmod(i, 2)
        field, data = image_of(sample)
        assert data == NLVR2[f"image_{side}"][row]
        meta = sample["json"]
        assert meta["id"] == keys[i] and meta["identifier"] == NLVR2["identifier"][row]
        assert meta["texts"] == meta["questions"] == NLVR2["questions"][row]
        assert meta["answers"] == NLVR2["answers"][row]
        assert meta["labels"] == [a == "True" for a in NLVR2["answers"][row]]
        assert meta["image_index"] == side and meta["pair_keys"] == keys[2 * row : 2 * row + 2]
        assert meta["table_name"] == "nlvr2_dev" and "vilt_split" not in meta
    assert image_of(samples[1])[0] == "jpg"
    assert json.loads((out / META_NAME).read_text())["image_field"] == ["jpg", "png"]
    grid = PatchGrid(image_size=8, patch_size=4)  # what a patch model (ViLT) reads of each sample
    assert all(grid.patches(s, "shard")[0].shape == (4, 48) for s in samples)


def test_an_image_only_split_joins_another_and_a_region_dataset_refuses_it(tmp_path, arrows):
    out = tmp_path / "shards"
    convert_vilt([arrows["vqa"]], out, split="train")
    convert_vilt([arrows["nlvr2"]], out, split="val")
    meta = json.loads((out / META_NAME).read_text())
    assert meta["counts"] == {"train": 2, "val": 4} and meta["image_field"] == ["jpg", "png"]
    assert meta["splits"]["train"]["image_field"] == ["jpg", "png"] and meta["feat_dim"] is None
    region = {**meta, "feat_dim": 2048, "class_names": ["x"] * 1601}
    (out / META_NAME).write_text(json.dumps(region))
    with pytest.raises(writer.ConvertError, match=r"feat_dim=2048, but this val split has feat_dim=None"):
        convert_vilt([arrows["nlvr2"]], out, split="val", overwrite=True)


def corrupt(columns: dict, column: str, row: int, value) -> dict:
    changed = {name: list(values) for name, values in columns.items()}
    changed[column][row] = value
    return changed


BAD_CASES = {
    # name: (the file's columns, what the message names besides the file)
    "bytes that are no image": (
        corrupt(CAPTIONS, "image", 3, b"GIF89a not ours"),
        ["row 3", "'COCO_val2014_000000000004.jpg'", "field 'image'", "neither a JPEG nor a PNG"],
    ),
    "a null image": (
        corrupt(CAPTIONS, "image", 4, None),
        ["row 4", "'vg.2345.jpg'", "field 'image' is null"],
    ),
    "a null inside the captions": (
        corrupt(CAPTIONS, "caption", 3, ["grey", None]),
        ["row 3", "'COCO_val2014_000000000004.jpg'", "field 'caption'"],
    ),
    "a missing column": (
        {k: v for k, v in VQA.items() if k != "answer_scores"},
        ["vqa layout", "column 'answer_scores' is missing"],
    ),
    "a column of the wrong type": (
        {**CAPTIONS, "caption": [" ".join(c) for c in CAPTIONS["caption"]]},
        ["every row", "field 'caption' is string, expected list<string>"],
    ),
    "answers that do not line up": (
        corrupt(VQA, "answer_scores", 1, [[0.9], [0.3]]),
        ["row 1", "(image_id 42)", "field 'answer_scores' has 2 entries for 1 questions"],
    ),
    "an NLVR2 answer that is no boolean": (
        corrupt(NLVR2, "answers", 1, ["yes"]),
        ["row 1", "(identifier 'dev-851-2')", "field 'answers'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_a_bad_record_names_file_row_and_field_and_leaves_no_output(tmp_path, case):
    columns, named = BAD_CASES[case]
    path = write_arrow(tmp_path / "in" / "bad.arrow", columns, batch_rows=2)
    out = tmp_path / "shards"
    with pytest.raises(ShardError) as caught:
        convert_vilt([path], out, split="train", samples_per_shard=1)
    message = str(caught.value)
    assert message.startswith(f"ViLT Arrow {path}"), message
    assert all(part in message for part in named), (named, message)
    assert not out.exists()


def test_a_killed_conversion_resumes_without_rewriting_finished_shards(tmp_path, arrows, monkeypatch):
    out = tmp_path / "shards"
    real_write, calls, kill = writer.write_shard, [], {"on_call": 2}

    def dies_on_second_shard(plan, path, start, stop):
        calls.append(path.name)
        if len(calls) == kill["on_call"]:
            raise RuntimeError("killed")
        real_write(plan, path, start, stop)

    monkeypatch.setattr(writer, "write_shard", dies_on_second_shard)
    inputs = [
        arrows["captions"],
        write_arrow(tmp_path / "arrows" / "vg.arrow", CAPTIONS | {"image_id": list("abcde")}),
    ]
    with pytest.raises(RuntimeError, match="killed"):
        convert_vilt(inputs, out, split="train", samples_per_shard=3)
    work = writer.work_dir(out)
    assert not out.exists() and sorted(p.name for p in work.glob("*.tar")) == ["train-000000.tar"]
    before = (work / "train-000000.tar").stat()
    (work / ".train-000001.tar.999.dead.tmp").write_bytes(b"half a shard")  # as a SIGKILL leaves it

    calls.clear()
    kill["on_call"] = 0
    result, _ = convert_vilt(inputs, out, split="train", samples_per_shard=3)
    assert calls == ["train-000001.tar", "train-000002.tar"] and (result.samples, result.reused) == (8, 1)
    after = (out / "train-000000.tar").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not work.exists() and not list(out.glob(".*"))

    whole = tmp_path / "whole"
    convert_vilt(inputs, whole, split="train", samples_per_shard=3)
    names = sorted(p.name for p in whole.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    assert all((out / n).read_bytes() == (whole / n).read_bytes() for n in names)
    assert [s["__key__"] for s in read_back(out)][4:] == ["a", "b", "d", "e"]


def test_a_failure_after_finished_shards_publishes_nothing(tmp_path):
    """Complete or absent: the last shard's record is bad, so `out` never appears, whatever came before."""
    path = write_arrow(tmp_path / "in" / "vqav2_train.arrow", corrupt(VQA, "question_id", 1, [1, 2]))
    out = tmp_path / "shards"
    with pytest.raises(ShardError, match="field 'question_id'"):
        convert_vilt([path], out, split="train", samples_per_shard=1)
    assert not out.exists() and (writer.work_dir(out) / "train-000000.tar").is_file()
    assert not (writer.work_dir(out) / META_NAME).exists()


run = run_cli


def test_cli_converts_and_refuses_bad_input_in_one_line(tmp_path, arrows, capsys):
    out = tmp_path / "shards"
    args = ["data", "convert", "--from", "vilt", "--out", str(out), "--split", "train"]
    code, stdout, _ = run(capsys, *args, "--arrow", str(arrows["captions"]), "--samples-per-shard", "2")
    assert code == 0 and "4 train sample(s) in 2 shard(s)" in stdout and "1 row(s) without a text" in stdout
    assert len(read_back(out)) == 4

    lxmert = ["data", "convert", "--from", "lxmert", "--out", str(tmp_path / "o"), "--split", "train"]
    for argv, start in [
        (args, "lottery: --from vilt needs --arrow"),
        ([*args, "--arrow", str(tmp_path / "missing.arrow")], "lottery: --arrow "),
        (
            [*lxmert, "--tsv", "x.tsv", "--captions", "c.json", "--arrow", "a.arrow"],
            "lottery: --arrow: not an input",
        ),
        ([*args, "--arrow", str(arrows["captions"])], "lottery: --out: "),  # a finished split is kept
        (
            [*args, "--arrow", str(arrows["captions"]), str(arrows["vqa"]), "--overwrite"],
            "lottery: data refused: ",
        ),
    ]:
        code, _, err = run(capsys, *argv)
        lines = [line for line in err.strip().splitlines() if "%|" not in line]  # progress lines aside
        assert code == 2 and len(lines) == 1 and lines[0].startswith(start), (argv, code, err)
    assert "different layouts" in lines[0]

    bad = write_arrow(tmp_path / "in" / "bad.arrow", corrupt(CAPTIONS, "image", 0, b"not an image"))
    code, _, err = run(capsys, *args[:5], str(tmp_path / "other"), *args[6:], "--arrow", str(bad))
    lines = [line for line in err.strip().splitlines() if "%|" not in line]
    assert (
        code == 2
        and len(lines) == 1
        and lines[0].startswith(f"lottery: data refused: ViLT Arrow {bad}, row 0")
    )
    assert "field 'image'" in lines[0] and not (tmp_path / "other").exists()


def test_without_pyarrow_one_line_says_what_to_install(tmp_path, arrows, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    args = ["data", "convert", "--from", "vilt", "--out", str(tmp_path / "o"), "--split", "train"]
    code, _, err = run(capsys, *args, "--arrow", str(arrows["captions"]))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and PYARROW_HINT in lines[0], err
