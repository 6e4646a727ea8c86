"""Parsers of the seven benchmarks' public annotation files into `TaskExample`s, one module per format.

Every parser takes the file path(s) and its options and returns `list[TaskExample]` with unique uids;
bad input raises `AnnotationError` naming the file and the line (JSON Lines) or record (JSON).
`PARSERS` maps each task name of `TASK_NAMES` to its parser; their arguments differ by format.
"""

from __future__ import annotations

from collections.abc import Callable

from lottery.data.annotations.errors import AnnotationError
from lottery.data.annotations.gqa import parse_gqa
from lottery.data.annotations.karpathy import parse_karpathy
from lottery.data.annotations.nlvr2 import parse_nlvr2
from lottery.data.annotations.refcoco import parse_refcoco
from lottery.data.annotations.snli_ve import parse_snli_ve
from lottery.data.annotations.vcr import parse_vcr, vcr_image_key
from lottery.data.annotations.vqa import parse_vqa
from lottery.data.annotations.vqa_answers import normalise_answer, soft_scores
from lottery.data.examples import TaskExample

PARSERS: dict[str, Callable[..., list[TaskExample]]] = {
    "vqa": parse_vqa,
    "gqa": parse_gqa,
    "vcr": parse_vcr,
    "snli-ve": parse_snli_ve,
    "refcoco+": parse_refcoco,
    "retrieval": parse_karpathy,
    "nlvr2": parse_nlvr2,
}

__all__ = [
    "PARSERS",
    "AnnotationError",
    "normalise_answer",
    "parse_gqa",
    "parse_karpathy",
    "parse_nlvr2",
    "parse_refcoco",
    "parse_snli_ve",
    "parse_vcr",
    "parse_vqa",
    "soft_scores",
    "vcr_image_key",
]
