"""ViLT's Arrow tables -> image-only shards: one sample per image, its file bytes copied unchanged.

ViLT (`vilt/utils/write_*.py`) stores a dataset as Arrow IPC *files*, one row per image, the image
file's bytes in a binary column. Three layouts, told apart by their columns:
- captions (COCO, Flickr30k, VG, CC, SBU): `image`, `caption` (list of str), `image_id`, usually
  `split`; VG adds the phrases' `x`, `y`, `width`, `height`;
- VQA v2: `image`, `image_id`, `split`, and per question `questions`, `answers`, `answer_labels`,
  `answer_scores`, `question_id` (the test splits leave the three answer columns empty);
- NLVR2: `image_0`, `image_1`, `identifier` (the pair, `train-10171-0`), and per statement
  `questions` and `answers` ("True"/"False"). No split column: the file name (ViLT's `table_name`,
  `nlvr2_dev`) says it.

A sample is `__key__`, `json` and `jpg` or `png` (the format read from the bytes' signature, never
from a file name: NLVR2's `.png` files are not all PNGs), with no region features, which is what a
patch model reads (schema.py). `json` holds `id`, `split` (the `--split` asked for), `texts`,
`table_name` (the file's stem), ViLT's `split` as `vilt_split`, and the source's own fields: VQA's
and NLVR2's per-question columns verbatim under ViLT's names, so that `questions[i]`, `answers[i]`
and `texts[i]` are one question; `labels`, NLVR2's answers as booleans. An NLVR2 row is two images,
so it gives two samples, `<identifier>-img0` and `-img1`, each carrying the pair's statements and
labels, its `image_index` (0 or 1) and `pair_keys` (both keys), so a pair task can join them again.
Other plain columns (VG's boxes) are copied as they are; a column of another type is dropped and
named in `meta.json`. Blank captions are dropped, and a row left without text is skipped and counted.

Reading streams: each file is memory-mapped and read a record batch at a time (`get_batch`, never
`read_all`), a value at a time from the batch, so the process holds one image's bytes whatever the
input size (the mapped pages are the OS's page cache, not the process's memory). A first pass reads
the small columns (ids, texts) and the first bytes of each image; it fixes the sample order (files
in the order given, then rows) and where each sample is (file, batch, row), so shard `i` is a fixed
slice of the input and a killed run resumes (writer.py). Nothing imports pyarrow before a conversion.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lottery.data.convert.vilt_layouts import Layout, detect_layout, image_field, plain_column
from lottery.data.convert.writer import ConvertError, Plan, Result, check_target, safe_key, write_shards
from lottery.data.schema import IMAGE_MAGIC
from lottery.progress import progress_bar

PYARROW_HINT = 'pip install "vl-lottery[convert]"'
_IMAGE_SUFFIX = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)
_HEAD = max(len(magic) for magic in IMAGE_MAGIC.values())
# json keys this converter writes itself; a source column of the same name is kept as `vilt_<name>`
_OWN_KEYS = frozenset(
    {"id", "split", "texts", "table_name", "vilt_split", "labels", "image_index", "pair_keys"}
)


def require_pyarrow() -> Any:
    """pyarrow, imported only for a conversion; missing, it is the one line saying how to install it."""
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401 (binary_slice reads the images' first bytes)
    except ImportError:
        from lottery.preflight import InputError

        raise InputError(
            f"--from vilt reads Arrow files with pyarrow, which is not installed: {PYARROW_HINT}"
        ) from None
    return pa


# --- the first pass: which rows become samples, and where each one is ---------------------------


@dataclass
class Table:
    """One input file: its reader, layout, and the columns copied into json beside the layout's own."""

    path: Path
    reader: Any
    layout: Layout
    extras: list[str]
    dropped: list[str]
    batch_rows: list[int]  # rows of each record batch
    batch_starts: list[int]  # the file's row number of each batch's first row

    def where(self, row: int, sample_id: Any) -> str:
        return f"ViLT Arrow {self.path}, row {row} ({self.layout.id_column} {sample_id!r})"


def open_table(pa: Any, path: Path, stack: ExitStack) -> Table:
    try:
        source = stack.enter_context(pa.memory_map(str(path), "r"))
        reader = pa.ipc.open_file(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConvertError(f"ViLT Arrow {path}: not an Arrow IPC file ({exc})") from None
    layout = detect_layout(reader.schema, path)
    extras, dropped = [], []
    for column in reader.schema:
        if column.name in layout.columns or column.name == "split" or column.name.startswith("__"):
            continue  # "__index_level_0__": a pandas index, not data
        (extras if plain_column(column.type) else dropped).append(column.name)
    batch_rows = [reader.get_batch(b).num_rows for b in range(reader.num_record_batches)]
    starts = np.concatenate([[0], np.cumsum(batch_rows)[:-1]]).astype(int).tolist() if batch_rows else []
    return Table(path, reader, layout, extras, dropped, batch_rows, starts)


@dataclass(frozen=True)
class Index:
    """The samples in order: keys, their image fields, and each one's (table, batch, row, image column)."""

    keys: list[str]
    fields: list[str]
    table: np.ndarray
    batch: np.ndarray
    row: np.ndarray
    side: np.ndarray
    rows_without_texts: int


def sample_key(layout: Layout, sample_id: Any, side: int) -> str:
    """`__key__`: the image id without its file suffix, or `<identifier>-img0|1` for an NLVR2 side."""
    if layout.kind == "nlvr2":
        return safe_key(f"{sample_id}-img{side}")
    return safe_key(_IMAGE_SUFFIX.sub("", str(sample_id)))


def index_tables(pa: Any, tables: Sequence[Table]) -> Index:
    """Read the ids, texts and image signatures of every row, refusing a null id or a non-image."""
    keys: list[str] = []
    fields: list[str] = []
    where: dict[str, list[int]] = {"table": [], "batch": [], "row": [], "side": []}
    skipped = 0
    total = sum(sum(t.batch_rows) for t in tables)
    with progress_bar(total=total, desc="index Arrow", unit="row") as bar:
        for t_index, table in enumerate(tables):
            for b_index, (rows, first) in enumerate(zip(table.batch_rows, table.batch_starts, strict=True)):
                batch = table.reader.get_batch(b_index)
                ids = batch.column(table.layout.id_column).to_pylist()
                texts = batch.column(table.layout.text_column).to_pylist()
                heads = [
                    pa.compute.binary_slice(batch.column(name), 0, _HEAD).to_pylist()
                    for name in table.layout.images
                ]
                for row in range(rows):
                    sample_id = ids[row]
                    if sample_id is None:
                        raise ConvertError(
                            f"{table.where(first + row, None)}: field {table.layout.id_column!r} is null"
                        )
                    if not any(isinstance(t, str) and t.strip() for t in texts[row] or []):
                        skipped += 1
                        continue
                    for side, name in enumerate(table.layout.images):
                        field = image_field(heads[side][row])
                        if field is None:
                            raise ConvertError(
                                _not_an_image(table.where(first + row, sample_id), name, heads[side][row])
                            )
                        keys.append(sample_key(table.layout, sample_id, side))
                        fields.append(field)
                        for axis, value in zip(where, (t_index, b_index, row, side), strict=True):
                            where[axis].append(value)
                bar.update(rows)
    arrays = {axis: np.asarray(values, dtype=np.int64) for axis, values in where.items()}
    return Index(keys, fields, rows_without_texts=skipped, **arrays)


def _not_an_image(where: str, column: str, head: bytes | None) -> str:
    if head is None:
        return f"{where}: field {column!r} is null, expected the image file's bytes"
    return f"{where}: field {column!r} is neither a JPEG nor a PNG file (it starts {head!r})"


# --- one sample ------------------------------------------------------------------------------


def _texts(where: str, column: str, values: Any, *, drop_blank: bool) -> list[str]:
    """The texts of a row: blank captions dropped; a blank question refused (its answers would shift)."""
    if values is None or any(not isinstance(v, str) for v in values):
        raise ConvertError(
            f"{where}: field {column!r} is {values!r}, expected a list of strings without nulls"
        )
    if drop_blank:
        return [v for v in values if v.strip()]
    blank = [i for i, v in enumerate(values) if not v.strip()]
    if blank:
        raise ConvertError(f"{where}: field {column!r} has a blank text at position {blank[0]}")
    return list(values)


def vqa_fields(where: str, record: dict[str, Any], count: int) -> dict[str, Any]:
    """VQA's per-question columns, checked to line up with the questions (or empty: a test split)."""
    qids = record["question_id"]
    if qids is None or len(qids) != count or any(q is None for q in qids):
        raise ConvertError(f"{where}: field 'question_id' is {qids!r}; expected {count} ids, one a question")
    columns = {name: record[name] for name in ("answers", "answer_labels", "answer_scores")}
    for name, value in columns.items():
        if value is None or (value and len(value) != count):
            raise ConvertError(
                f"{where}: field {name!r} has {None if value is None else len(value)} entries for {count} questions"
            )
    if any(columns.values()):
        for name, value in columns.items():
            if not value:
                raise ConvertError(f"{where}: field {name!r} is empty while the other answer columns are not")
        for q, parts in enumerate(zip(*columns.values(), strict=True)):
            if any(p is None or None in p for p in parts) or len({len(p) for p in parts}) != 1:
                raise ConvertError(
                    f"{where}: question {q}: 'answers', 'answer_labels' and 'answer_scores' are "
                    f"{list(parts)!r}, expected lists of one length without nulls"
                )
    return {"questions": record["questions"], "question_id": qids, **columns}


def nlvr2_fields(where: str, record: dict[str, Any], count: int) -> dict[str, Any]:
    answers = record["answers"]
    if answers is None or len(answers) != count or any(a not in ("True", "False") for a in answers):
        raise ConvertError(
            f"{where}: field 'answers' is {answers!r}; expected {count} of 'True'/'False', one a statement"
        )
    return {"questions": record["questions"], "answers": answers, "labels": [a == "True" for a in answers]}


def to_sample(table: Table, record: dict[str, Any], *, row: int, side: int, split: str, key: str) -> dict:
    """The decoded sample (schema.py) of one image of one row; `record` holds the row's values."""
    layout = table.layout
    sample_id = record[layout.id_column]
    where = table.where(row, sample_id)
    raw = record[layout.text_column]
    texts = _texts(where, layout.text_column, raw, drop_blank=layout.kind == "captions")
    meta: dict[str, Any] = {"split": split, "texts": texts, "table_name": table.path.stem}
    if record.get("split") is not None:
        meta["vilt_split"] = record["split"]
    for name in table.extras:
        meta[f"vilt_{name}" if name in _OWN_KEYS else name] = record[name]
    if layout.kind == "nlvr2":
        meta |= nlvr2_fields(where, record, len(texts))
        meta |= {
            "id": key,
            "identifier": sample_id,
            "image_index": side,
            "pair_keys": [sample_key(layout, sample_id, s) for s in (0, 1)],
        }
    else:
        meta |= {"id": str(sample_id), "image_id": sample_id}
        if layout.kind == "vqa":
            meta |= vqa_fields(where, record, len(texts))
    column = layout.images[side]
    data = record[column]
    field = image_field(None if data is None else data[:_HEAD])
    if field is None:
        raise ConvertError(_not_an_image(where, column, None if data is None else data[:_HEAD]))
    return {"__key__": key, "json": meta, field: data}


# --- the conversion ----------------------------------------------------------------------------


def convert_vilt(
    arrows: Sequence[Path],
    out: Path,
    *,
    split: str,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
) -> tuple[Result, dict[str, Any]]:
    """Convert; returns the writer's result and what was left out: rows without text, dropped columns."""
    pa = require_pyarrow()
    arrows, out = [Path(p) for p in arrows], Path(out)
    if not arrows:
        raise ConvertError("ViLT: no Arrow file given")
    check_target(out, overwrite, split)
    with ExitStack() as stack:
        tables = [open_table(pa, path, stack) for path in arrows]
        kinds = {t.layout.kind for t in tables}
        if len(kinds) > 1:
            listing = ", ".join(f"{t.path} ({t.layout.kind})" for t in tables)
            raise ConvertError(
                f"ViLT Arrow files of different layouts in one split: {listing}; convert each alone"
            )
        index = index_tables(pa, tables)
        cache: dict[str, Any] = {"at": None, "batch": None}

        def load(i: int) -> dict[str, Any]:
            t, b, row, side = (int(a[i]) for a in (index.table, index.batch, index.row, index.side))
            table = tables[t]
            if cache["at"] != (t, b):  # samples come in order: a batch is fetched once per shard at most
                cache["at"], cache["batch"] = (t, b), table.reader.get_batch(b)
            batch = cache["batch"]
            wanted = [
                n for n in batch.schema.names if n not in table.layout.images and n not in table.dropped
            ]
            record = {name: batch.column(name)[row].as_py() for name in wanted if not name.startswith("__")}
            record[table.layout.images[side]] = batch.column(table.layout.images[side])[row].as_py()
            return to_sample(
                table, record, row=table.batch_starts[b] + row, side=side, split=split, key=index.keys[i]
            )

        dropped = {str(t.path): t.dropped for t in tables if t.dropped}
        skipped = {"rows_without_texts": index.rows_without_texts, "dropped_columns": dropped}
        plan = Plan(
            fmt="vilt",
            split=split,
            keys=index.keys,
            load=load,
            source={"format": "vilt", "layout": kinds.pop(), "arrow": [str(p.resolve()) for p in arrows]},
            inputs=arrows,
            feat_dim=None,
            num_classes=0,
            has_soft=False,
            extra_meta={"skipped": skipped},
            image_fields=tuple(sorted(set(index.fields))),
        )
        result = write_shards(plan, out, samples_per_shard=samples_per_shard, overwrite=overwrite)
    return result, skipped
