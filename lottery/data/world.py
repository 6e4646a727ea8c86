"""The shapes world: vocabulary, scenes and the spatial relations between their objects.

It stands in for COCO / Visual Genome images, so that pre-training, IMP and every downstream task run
offline. A scene is what an image would be; captions, region features and (later) task questions are
all derived from it, so a scene stored in a shard is enough to regenerate any of them.

Coordinates are normalised to the image, [0, 1] on both axes, with y growing downwards as in image
coordinates: "above" means a smaller y.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "diamond",
    "cross",
    "pentagon",
)
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white", "gray")
SIZES: tuple[str, ...] = ("small", "large")

# The detector's classes are the shapes: `Obj.label` indexes this tuple, and so do soft labels.
CLASS_NAMES: tuple[str, ...] = SHAPES

# Box side (fraction of the image) per size; the gap between the ranges keeps "small" and "large"
# separable from the box alone.
SIDE_RANGE: dict[str, tuple[float, float]] = {"small": (0.08, 0.12), "large": (0.17, 0.23)}

# Two objects stand in a relation only when their centres differ by more than this along its axis,
# so that a caption or a question never hinges on a near tie.
RELATION_MARGIN = 0.1

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
# Each relation's opposite: "a <relation> b" holds iff "a <opposite> b" does not, for two objects whose
# centres differ by more than the margin along the relation's axis.
OPPOSITE_RELATIONS: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}

# At most this fraction of the smaller box may be covered by another box ("no heavy overlap").
_MAX_OVERLAP = 0.15
_TRIES_PER_OBJECT = 50
_ATTRIBUTE_COUNTS = np.array([len(SHAPES), len(COLOURS), len(SIZES)])


@dataclass(frozen=True)
class SceneConfig:
    """How crowded scenes are: the knob of a scene-complexity curriculum (1..1 is the easy start)."""

    min_objects: int = 3
    max_objects: int = 10

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= 10:
            raise ValueError(
                f"scene config: need 1 <= min_objects <= max_objects <= 10, got "
                f"min_objects={self.min_objects}, max_objects={self.max_objects}; "
                "more than 10 objects do not fit the image without heavy overlap"
            )


@dataclass(frozen=True)
class Obj:
    """One object: attributes and its box `(x1, y1, x2, y2)` in normalised image coordinates."""

    shape: str
    colour: str
    size: str
    box: tuple[float, float, float, float]

    @property
    def label(self) -> int:
        """The detector class: index of the shape in `CLASS_NAMES`."""
        return CLASS_NAMES.index(self.shape)

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def description(self) -> tuple[str, str, str]:
        """(size, colour, shape): what a caption can say about the object."""
        return self.size, self.colour, self.shape


@dataclass(frozen=True)
class Scene:
    """An image of the world: its objects, in the order their regions are stored."""

    objects: tuple[Obj, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, stored in every shard sample so tasks can be regenerated from it."""
        return {
            "objects": [
                {"shape": o.shape, "colour": o.colour, "size": o.size, "box": list(o.box)}
                for o in self.objects
            ]
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scene:
        """Inverse of `to_json`; rejects unknown attributes so a scene from another world fails loudly."""
        objects = []
        for i, o in enumerate(data["objects"]):
            for field, allowed in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES)):
                if o[field] not in allowed:
                    raise ValueError(
                        f"scene object {i}: unknown {field} {o[field]!r}; expected one of {allowed}"
                    )
            x1, y1, x2, y2 = (float(v) for v in o["box"])
            objects.append(Obj(o["shape"], o["colour"], o["size"], (x1, y1, x2, y2)))
        return cls(tuple(objects))


def relations(a: Obj, b: Obj) -> tuple[str, ...]:
    """Every relation in `RELATIONS` that holds for "a <relation> b" (none, one, or two on a diagonal)."""
    (ax, ay), (bx, by) = a.centre, b.centre
    held = []
    if bx - ax > RELATION_MARGIN:
        held.append("left of")
    if ax - bx > RELATION_MARGIN:
        held.append("right of")
    if by - ay > RELATION_MARGIN:
        held.append("above")
    if ay - by > RELATION_MARGIN:
        held.append("below")
    return tuple(held)


def generate_scene(rng: np.random.Generator, cfg: SceneConfig) -> Scene:
    """Draw a scene: uniform attributes, boxes placed by rejection so that none overlaps heavily.

    Deterministic in `rng`. If an object finds no free place, the scene is drawn again from the
    same generator, so the result is still a function of the rng's state alone.
    """
    while True:
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        attributes = (rng.random((count, 3)) * _ATTRIBUTE_COUNTS).astype(np.int64).tolist()
        objects: list[Obj] = []
        for shape, colour, size in attributes:
            box = _free_box(rng, SIDE_RANGE[SIZES[size]], objects)
            if box is None:
                break
            objects.append(Obj(SHAPES[shape], COLOURS[colour], SIZES[size], box))
        else:
            return Scene(tuple(objects))


def _free_box(
    rng: np.random.Generator, side_range: tuple[float, float], placed: list[Obj]
) -> tuple[float, float, float, float] | None:
    low, high = side_range
    for _ in range(_TRIES_PER_OBJECT):
        w, h, ux, uy = rng.random(4).tolist()
        w = low + w * (high - low)
        h = low + h * (high - low)
        x1, y1 = ux * (1 - w), uy * (1 - h)
        box = (_r4(x1), _r4(y1), _r4(x1 + w), _r4(y1 + h))
        if all(_overlap(box, o.box) <= _MAX_OVERLAP for o in placed):
            return box
    return None


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection area as a fraction of the smaller box."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _r4(v: float) -> float:
    """Four decimals: compact JSON, and relations computed from a stored scene equal the generated ones."""
    return round(v, 4)
