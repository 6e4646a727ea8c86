"""ViLT's three Arrow table layouts (captions, VQA v2, NLVR2): their columns, types and roles.

`detect_layout` tells a file's layout from its schema and checks every column the layout needs is
there with its type, so a conversion refuses a wrong file before it reads a row; `vilt_arrow.py`
converts. The checks are predicates on pyarrow DataTypes; each imports `pyarrow.types` when it runs,
so importing this module does not need pyarrow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lottery.data.convert.writer import ConvertError
from lottery.data.schema import IMAGE_MAGIC

# --- column types, as predicates on a pyarrow DataType -----------------------------------------


def _is_null(t: Any) -> bool:
    import pyarrow.types as pt

    return pt.is_null(t)  # every row's list empty: pandas gives list<null> (VQA's test splits)


def _binary(t: Any) -> bool:
    import pyarrow.types as pt

    return pt.is_binary(t) or pt.is_large_binary(t) or pt.is_binary_view(t)


def _string(t: Any) -> bool:
    import pyarrow.types as pt

    return pt.is_string(t) or pt.is_large_string(t) or pt.is_string_view(t)


def _integer(t: Any) -> bool:
    import pyarrow.types as pt

    return pt.is_integer(t)


def _number(t: Any) -> bool:
    import pyarrow.types as pt

    return pt.is_integer(t) or pt.is_floating(t)


def _id(t: Any) -> bool:
    return _string(t) or _integer(t)


def _list_of(inner: Callable[[Any], bool]) -> Callable[[Any], bool]:
    import pyarrow.types as pt

    def check(t: Any) -> bool:
        is_list = pt.is_list(t) or pt.is_large_list(t) or pt.is_list_view(t)
        return is_list and (_is_null(t.value_type) or inner(t.value_type))

    return check


def plain_column(t: Any) -> bool:
    """A column JSON holds as it is: numbers, strings, booleans, and lists of them."""
    import pyarrow.types as pt

    if pt.is_list(t) or pt.is_large_list(t):
        return plain_column(t.value_type)
    return _is_null(t) or _number(t) or _string(t) or pt.is_boolean(t)


@dataclass(frozen=True)
class Layout:
    """One of ViLT's table layouts: its columns (name -> (type check, the type in words)) and roles."""

    kind: str
    columns: dict[str, tuple[Callable[[Any], bool], str]]
    images: tuple[str, ...]  # the binary column(s), one sample each
    id_column: str
    text_column: str


def layouts() -> dict[str, Layout]:
    strings, ints, nums = _list_of(_string), _list_of(_integer), _list_of(_number)
    image = (_binary, "binary (the image file's bytes)")
    return {
        "captions": Layout(
            "captions",
            {"image": image, "caption": (strings, "list<string>"), "image_id": (_id, "string or integer")},
            ("image",),
            "image_id",
            "caption",
        ),
        "vqa": Layout(
            "vqa",
            {
                "image": image,
                "image_id": (_id, "string or integer"),
                "questions": (strings, "list<string>"),
                "answers": (_list_of(strings), "list<list<string>>"),
                "answer_labels": (_list_of(ints), "list<list<integer>>"),
                "answer_scores": (_list_of(nums), "list<list<float>>"),
                "question_id": (ints, "list<integer>"),
            },
            ("image",),
            "image_id",
            "questions",
        ),
        "nlvr2": Layout(
            "nlvr2",
            {
                "image_0": image,
                "image_1": image,
                "identifier": (_string, "string"),
                "questions": (strings, "list<string>"),
                "answers": (strings, "list<string> of 'True'/'False'"),
            },
            ("image_0", "image_1"),
            "identifier",
            "questions",
        ),
    }


def detect_layout(schema: Any, path: Path) -> Layout:
    """The layout a file's columns announce, every column of it present and of its type."""
    names = set(schema.names)
    found = layouts()
    if names & {"image_0", "image_1"}:
        layout = found["nlvr2"]
    elif names & {"answer_labels", "answer_scores", "question_id"}:
        layout = found["vqa"]
    elif "caption" in names:
        layout = found["captions"]
    else:
        raise ConvertError(
            f"ViLT Arrow {path}: not one of ViLT's layouts (captions need 'caption', VQA v2 'answer_labels', "
            f"NLVR2 'image_0' and 'image_1'); its columns are {schema.names}"
        )
    for name, (check, words) in layout.columns.items():
        if name not in names:
            raise ConvertError(
                f"ViLT Arrow {path} ({layout.kind} layout): column {name!r} is missing (its columns are "
                f"{schema.names})"
            )
        kind = schema.field(name).type
        if not check(kind):
            raise ConvertError(f"ViLT Arrow {path}, every row: field {name!r} is {kind}, expected {words}")
    if "split" in names and not _string(schema.field("split").type):
        raise ConvertError(
            f"ViLT Arrow {path}, every row: field 'split' is {schema.field('split').type}, expected string"
        )
    return layout


def image_field(head: bytes | None) -> str | None:
    """`jpg` or `png` by the file's signature (schema.IMAGE_MAGIC), None for any other bytes."""
    for field, magic in IMAGE_MAGIC.items():
        if head is not None and head.startswith(magic):
            return field
    return None
