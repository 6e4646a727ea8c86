"""Captions of shapes-world scenes from a small grammar of attributes and spatial relations.

Every caption is true of its scene: an object is named by its (size, colour, shape), and an object in a
relation is only named when that description fits no other object, so "the red circle" and "a red
circle is left of ..." can only mean the object that was meant. Every word is a whole token of the
lowercase BERT WordPiece vocabulary, so masking a word masks exactly one token.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from lottery.data.world import COLOURS, OPPOSITE_RELATIONS, SHAPES, SIZES, Scene, relations

SIZE_WORDS: tuple[str, ...] = SIZES
COLOUR_WORDS: tuple[str, ...] = COLOURS
SHAPE_WORDS: tuple[str, ...] = SHAPES
# Each relation word's opposite (a relation's first word: "of" carries none): a caption true of its
# scene, with its relation word replaced, is false of it (its two objects are named uniquely).
OPPOSITE_WORDS: dict[str, str] = {a.split()[0]: b.split()[0] for a, b in OPPOSITE_RELATIONS.items()}
# The words that carry a relation: grounded MLM on these scores spatial reasoning.
RELATION_WORDS: tuple[str, ...] = tuple(OPPOSITE_WORDS)
_FUNCTION_WORDS: tuple[str, ...] = ("a", "an", "the", "there", "is", "of")
# Every word a caption can contain.
WORDS: frozenset[str] = frozenset(SIZE_WORDS + COLOUR_WORDS + SHAPE_WORDS + RELATION_WORDS + _FUNCTION_WORDS)

_ONE_OBJECT = ("{a}", "there is {a}")
_TWO_OBJECTS = ("{a} is {rel} {b}", "there is {a} {rel} {the_b}", "{the_a} is {rel} {the_b}")


@dataclass(frozen=True)
class Caption:
    """A caption and what it refers to: indexes into `scene.objects` and the relation, if any."""

    text: str
    mentions: tuple[int, ...]
    relation: str | None


def unique_objects(scene: Scene) -> list[int]:
    """Indexes of the objects whose (size, colour, shape) fits no other object of the scene."""
    counts = Counter(o.description for o in scene.objects)
    return [i for i, o in enumerate(scene.objects) if counts[o.description] == 1]


def describe(scene: Scene, index: int, rng: np.random.Generator) -> str:
    """A noun phrase without article for one object: "[size] colour shape".

    The size is said half of the time, and always when colour and shape alone would also fit
    another object, so that a phrase naming a uniquely described object stays unique.
    """
    obj = scene.objects[index]
    shared = sum(o.colour == obj.colour and o.shape == obj.shape for o in scene.objects) > 1
    if shared or rng.random() < 0.5:
        return f"{obj.size} {obj.colour} {obj.shape}"
    return f"{obj.colour} {obj.shape}"


def make_caption(scene: Scene, rng: np.random.Generator, mentions: int) -> Caption:
    """One caption naming `mentions` objects (1 or 2).

    With 2, two uniquely described objects in a relation are named; a scene with no such pair (one
    object, or all look-alikes) gets a one-object caption instead, which is still true.
    """
    if mentions not in (1, 2):
        raise ValueError(f"mentions_per_caption must be 1 or 2, got {mentions}")
    if mentions == 2:
        pair = _related_pair(scene, rng)
        if pair is not None:
            a, b, held = pair
            relation = held[int(rng.integers(len(held)))]
            template = _TWO_OBJECTS[int(rng.integers(len(_TWO_OBJECTS)))]
            phrase_a, phrase_b = describe(scene, a, rng), describe(scene, b, rng)
            text = template.format(
                a=_indefinite(phrase_a),
                the_a=f"the {phrase_a}",
                b=_indefinite(phrase_b),
                the_b=f"the {phrase_b}",
                rel=relation,
            )
            return Caption(text, (a, b), relation)
    index = int(rng.integers(len(scene.objects)))
    template = _ONE_OBJECT[int(rng.integers(len(_ONE_OBJECT)))]
    return Caption(template.format(a=_indefinite(describe(scene, index, rng))), (index,), None)


def _related_pair(scene: Scene, rng: np.random.Generator) -> tuple[int, int, tuple[str, ...]] | None:
    """A random ordered pair of uniquely described objects and the relations that hold between them."""
    candidates = [int(i) for i in rng.permutation(unique_objects(scene))]
    for a in candidates:
        for b in candidates:
            if a != b and (held := relations(scene.objects[a], scene.objects[b])):
                return a, b, held
    return None


def _indefinite(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"
