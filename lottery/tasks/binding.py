"""ITM negatives that only word-to-region binding tells apart: one attribute of one mention changed.

A theta0 pre-trained with random-image negatives reads colour and shape out of a single region but not
which of several regions a word is about (docs/theta0): a random image almost never differs from the
true one in the binding alone, so nothing teaches it. Here a mismatched caption keeps its own image and
has the colour or the shape of one mentioned object replaced by a value that leaves no object of the
scene fitting the changed phrase, so the caption is false of its scene by construction. Values another
object of the scene has are preferred: "the green circle" beside a green square and a red circle is the
negative that a bag of the scene's attributes cannot reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class AttributeVocab:
    """Token ids of the world's attribute words; each word must be one token of the tokenizer."""

    colours: dict[int, str]
    shapes: dict[int, str]
    sizes: dict[int, str]

    @classmethod
    def from_tokenizer(
        cls, tokenizer, colours: tuple[str, ...], shapes: tuple[str, ...], sizes: tuple[str, ...]
    ) -> AttributeVocab:
        tables = []
        for kind, words in (("colour", colours), ("shape", shapes), ("size", sizes)):
            ids = tokenizer.convert_tokens_to_ids(list(words))
            unknown = [w for w, token in zip(words, ids, strict=True) if token == tokenizer.unk_token_id]
            if unknown:
                raise ValueError(f"{kind} words {unknown} are not single tokens of the tokenizer")
            tables.append(dict(zip(ids, words, strict=True)))
        return cls(*tables)

    def token(self, word: str) -> int:
        for table in (self.colours, self.shapes, self.sizes):
            for token, known in table.items():
                if known == word:
                    return token
        raise KeyError(word)


@dataclass(frozen=True)
class _Mention:
    """Where one noun phrase "[size] colour shape" sits in the token ids."""

    size: str | None
    colour_at: int
    colour: str
    shape: str


def _mentions(tokens: list[int], vocab: AttributeVocab) -> list[_Mention]:
    found = []
    for i in range(len(tokens) - 1):
        if tokens[i] in vocab.colours and tokens[i + 1] in vocab.shapes:
            size = vocab.sizes.get(tokens[i - 1]) if i > 0 else None
            found.append(_Mention(size, i, vocab.colours[tokens[i]], vocab.shapes[tokens[i + 1]]))
    return found


def _fits_some_object(size: str | None, colour: str, shape: str, objects: list[dict[str, Any]]) -> bool:
    return any(
        o["colour"] == colour and o["shape"] == shape and (size is None or o["size"] == size) for o in objects
    )


def swap_attribute(
    ids: Tensor, scene: dict[str, Any], vocab: AttributeVocab, generator: torch.Generator
) -> Tensor | None:
    """`ids` with one mention's colour or shape changed so no object of `scene` fits it; None if none can.

    The mention and the attribute (colour or shape) are drawn from `generator`; among the values that
    make the phrase fit nothing, those present on another object of the scene are drawn first.
    """
    tokens = ids.tolist()
    mentions = _mentions(tokens, vocab)
    if not mentions:
        return None
    objects = scene["objects"]
    mention = mentions[int(torch.randint(len(mentions), (1,), generator=generator))]
    kinds = ("colour", "shape") if torch.rand(1, generator=generator) < 0.5 else ("shape", "colour")
    for kind in kinds:
        current = mention.colour if kind == "colour" else mention.shape
        values = sorted(set((vocab.colours if kind == "colour" else vocab.shapes).values()) - {current})
        false_values = [
            v
            for v in values
            if not _fits_some_object(
                mention.size,
                v if kind == "colour" else mention.colour,
                v if kind == "shape" else mention.shape,
                objects,
            )
        ]
        in_scene = [v for v in false_values if any(o[kind] == v for o in objects)]
        pool = in_scene or false_values
        if pool:
            value = pool[int(torch.randint(len(pool), (1,), generator=generator))]
            swapped = ids.clone()
            swapped[mention.colour_at + (0 if kind == "colour" else 1)] = vocab.token(value)
            return swapped
    return None
