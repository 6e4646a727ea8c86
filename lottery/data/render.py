"""Draw a shapes-world scene as a PNG image, so that patch models (ViLT) can read the world too.

Region models read features derived from the scene (features.py); a patch model needs pixels. The
image is a function of (scene, size) alone: a plain near-black background and each object, in scene
order, as a filled silhouette of its shape in its colour, filling its box. Shapes are drawn at
`SUPERSAMPLE` times the size and box-filtered down, so the edge pixels of even the smallest objects
(side 0.08 of the image, 5 px at 64 px) carry partial coverage, i.e. shape information, rather than an
aliased blob. The PNG is written with fixed settings and no ancillary chunks (no time, no dpi), so the
same scene gives the same bytes on every call and in every process (given the same zlib).
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw

from lottery.data.world import Scene

MIN_SIZE = 16  # at 16 px the smallest object is already ~1 px: smaller images show no shapes
SUPERSAMPLE = 4
# Fixed, so the bytes never depend on a library default; 1 is the fastest level, and 9 would save only
# ~15% of these mostly flat images' ~1.1 KB (64 px).
PNG_COMPRESS_LEVEL = 1

# Near-black with a blue tint: darker than every colour, and not gray.
BACKGROUND: tuple[int, int, int] = (14, 14, 22)
# One pixel value per `world.COLOURS` name (tests check they match).
RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 100, 235),
    "yellow": (240, 215, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}

Point = tuple[float, float]


def _regular(corners: int, inner: float | None = None, turns: float = 0.0) -> tuple[Point, ...]:
    """A regular polygon (or a star, with `inner` radius) pointing up, stretched to fill the unit box."""
    steps = corners * (2 if inner is not None else 1)
    points = []
    for k in range(steps):
        angle = -math.pi / 2 + 2 * math.pi * (k + turns) / steps
        radius = inner if inner is not None and k % 2 else 1.0
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    return _fill_unit_box(points)


def _heart(points: int = 48) -> tuple[Point, ...]:
    """The classic parametric heart, lobes up (image y grows downwards)."""
    curve = []
    for k in range(points):
        t = 2 * math.pi * k / points
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        curve.append((x, -y))
    return _fill_unit_box(curve)


def _fill_unit_box(points: list[Point]) -> tuple[Point, ...]:
    """`points` scaled per axis to span [0, 1] x [0, 1]: every silhouette fills its object's box."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0, dx, dy = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return tuple(((x - x0) / dx, (y - y0) / dy) for x, y in points)


_ARM = 1 / 3  # the cross's arm width, as a fraction of its box
# Outlines in unit-box coordinates (y down), one per `world.SHAPES` name but the circle, which is drawn
# as an ellipse.
OUTLINES: dict[str, tuple[Point, ...]] = {
    "square": ((0, 0), (1, 0), (1, 1), (0, 1)),
    "triangle": ((0.5, 0), (1, 1), (0, 1)),
    "star": _regular(5, inner=0.42),
    "heart": _heart(),
    "diamond": ((0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)),
    "cross": (
        (_ARM, 0),
        (1 - _ARM, 0),
        (1 - _ARM, _ARM),
        (1, _ARM),
        (1, 1 - _ARM),
        (1 - _ARM, 1 - _ARM),
        (1 - _ARM, 1),
        (_ARM, 1),
        (_ARM, 1 - _ARM),
        (0, 1 - _ARM),
        (0, _ARM),
        (_ARM, _ARM),
    ),
    "pentagon": _regular(5),
}


def render_scene(scene: Scene, size: int) -> bytes:
    """PNG bytes of `scene` as an RGB `size` x `size` image; deterministic in (scene, size)."""
    if size < MIN_SIZE:
        raise ValueError(f"render size must be >= {MIN_SIZE} pixels, got size={size}")
    side = size * SUPERSAMPLE
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x1, y1, x2, y2 = (v * side for v in obj.box)
        colour = RGB[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x1, y1, x2, y2), fill=colour)
        else:
            w, h = x2 - x1, y2 - y1
            draw.polygon([(x1 + u * w, y1 + v * h) for u, v in OUTLINES[obj.shape]], fill=colour)
    small = image.reduce(SUPERSAMPLE)  # the box filter of resize(BOX), 3x faster for an integer factor
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()
