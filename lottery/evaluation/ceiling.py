"""The best score any model can reach on the grounded-MLM criteria: a perfect perceiver's.

A masked word is not always determined by the scene: "the small [MASK] circle" in a scene with two
small circles that differ in colour can only be guessed. This module reads each caption the way the
criterion masks it (every word of one kind at once), enumerates the objects each mention can refer to
given every attribute and relation left visible, and scores the Bayes-optimal guess under a uniform
prior over those readings. That is the ceiling of the criterion on the same val samples, the yardstick
beside the 0.80 target: a target above the ceiling could never be met, one below it can.

What a reader of the caption knows besides the words: a two-object caption names uniquely described
objects in a relation that holds; a phrase without a size is said only when colour and shape alone fit
one object; "left of" / "right of" keep "of" visible, so a masked horizontal relation is told from a
vertical one.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from lottery.data.captions import RELATION_WORDS, unique_objects
from lottery.data.world import COLOURS, SHAPES, SIZES, Obj, Scene, relations

KINDS = ("colour", "shape", "relation")
_AXES = {"left": ("left of", "right of"), "right": ("left of", "right of"), "above": ("above", "below")}
_AXES["below"] = _AXES["above"]


@dataclass(frozen=True)
class Mention:
    size: str | None
    colour: str
    shape: str


def parse(text: str) -> tuple[list[Mention], str | None]:
    """The object mentions (in order) and the relation word of a shapes-world caption."""
    mentions, relation, size, colour = [], None, None, None
    for word in text.split():
        if word in SIZES:
            size = word
        elif word in COLOURS:
            colour = word
        elif word in SHAPES:
            if colour is None:
                raise ValueError(f"caption {text!r}: shape {word!r} without a colour")
            mentions.append(Mention(size, colour, word))
            size, colour = None, None
        elif word in RELATION_WORDS:
            relation = word
    return mentions, relation


def _fits(obj: Obj, mention: Mention, masked: str, scene: Scene) -> bool:
    if mention.size is not None and obj.size != mention.size:
        return False
    if masked != "colour" and obj.colour != mention.colour:
        return False
    if masked != "shape" and obj.shape != mention.shape:
        return False
    if mention.size is None:  # the size is said whenever colour and shape alone fit another object too
        return sum(o.colour == obj.colour and o.shape == obj.shape for o in scene.objects) == 1
    return True


def _readings(
    scene: Scene, mentions: list[Mention], relation: str | None, masked: str
) -> list[tuple[int, ...]]:
    """Every assignment of objects to the mentions that the visible words allow."""
    unique = set(unique_objects(scene)) if len(mentions) == 2 else set(range(len(scene.objects)))
    found = []
    for combo in itertools.permutations(range(len(scene.objects)), len(mentions)):
        if not all(
            i in unique and _fits(scene.objects[i], m, masked, scene)
            for i, m in zip(combo, mentions, strict=True)
        ):
            continue
        if len(combo) == 2:
            held = relations(scene.objects[combo[0]], scene.objects[combo[1]])
            if relation is None or not held:
                continue
            if masked != "relation" and f"{relation} of" not in held and relation not in held:
                continue
            if masked == "relation" and not set(held) & set(_AXES[relation]):
                continue
        found.append(combo)
    return found


def _best(counts: Counter, truth: str) -> float:
    """The expected accuracy of the most probable answer (ties split evenly) when `truth` is right."""
    if not counts:
        return 0.0
    top = max(counts.values())
    winners = [value for value, count in counts.items() if count == top]
    return (truth in winners) / len(winners)


def caption_ceiling(scene: Scene, text: str, kind: str) -> list[float]:
    """One expected accuracy per word of `kind` in the caption (empty: it has none)."""
    mentions, relation = parse(text)
    if kind == "relation":
        if relation is None or len(mentions) != 2:
            return []
        counts: Counter = Counter()
        for a, b in _readings(scene, mentions, relation, "relation"):
            held = [h for h in relations(scene.objects[a], scene.objects[b]) if h in _AXES[relation]]
            for h in held:
                counts[h.split()[0]] += 1 / len(held)
        return [_best(counts, relation)]
    readings = _readings(scene, mentions, relation, kind)
    return [
        _best(Counter(getattr(scene.objects[combo[k]], kind) for combo in readings), getattr(m, kind))
        for k, m in enumerate(mentions)
    ]


def grounded_ceilings(samples: Iterable[tuple[Scene, str]]) -> dict[str, float]:
    """Per kind, the mean ceiling over every masked word of the samples (as the criterion counts)."""
    scores: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for scene, text in samples:
        for kind in KINDS:
            scores[kind] += caption_ceiling(scene, text, kind)
    return {kind: sum(v) / len(v) for kind, v in scores.items() if v}
