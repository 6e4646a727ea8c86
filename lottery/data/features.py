"""Detector-like region features for shapes-world scenes, in place of a Faster R-CNN.

A region's feature is a fixed random projection of its attributes (one-hot shape, colour and size,
plus its box) with Gaussian noise on top. The projection depends only on the world seed, so the same
attributes always point the same way in every sample and split, as a real detector's features do; the
noise is drawn per region, so no two regions are identical and the model must read attributes out of
a noisy 2048-d vector rather than look them up.

Drawing 2048 fresh normals per region would take most of the generation time, so a region's noise is
a window of D consecutive values at a random offset into one long Gaussian table made from the world
seed (the "shared noise table" of evolution strategies): each window is a standard normal vector, and
with millions of offsets two regions practically never share noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from lottery.data.schema import BOX_DIM
from lottery.data.world import CLASS_NAMES, COLOURS, SHAPES, SIZES, Scene

# Rows of the attribute encoding: one-hot shape, one-hot colour, one-hot size, then the 7-d box.
ATTRIBUTE_DIM = len(SHAPES) + len(COLOURS) + len(SIZES) + BOX_DIM

# Seeds the projection as default_rng([world_seed, _PROJECTION_STREAM]); samples use
# [seed, split_id, index], and SeedSequence ignores trailing zeros, so this tag must not be a split id.
_PROJECTION_STREAM = 0x70726F6A
# Values in the noise table beyond the last window start; 2**21 float32 is 8 MB.
_NOISE_TABLE = 1 << 21
# Logit added to the true class before the softmax: the soft label puts ~0.8 on it on average.
_SOFT_PEAK = 4.0


@dataclass(frozen=True)
class Regions:
    """What a detector returns for one image; N regions, one per object, in scene order."""

    feat: np.ndarray  # float16 (N, feat_dim)
    box: np.ndarray  # float32 (N, 7): x1, y1, x2, y2, w, h, w*h, all in [0, 1]
    soft: np.ndarray  # float16 (N, len(CLASS_NAMES)): class probabilities, for MRC-kl


@dataclass(frozen=True, eq=False)
class FeatureSpace:
    """The world's fixed "detector", built once per world seed by `for_world`.

    `projection` (ATTRIBUTE_DIM, feat_dim) is scaled so that the attribute signal has about unit
    variance per feature dimension; `noise` is the noise std in the same unit; `noise_windows`
    (_NOISE_TABLE, feat_dim) is a strided view of the noise table, one row per offset.
    """

    projection: np.ndarray
    noise_windows: np.ndarray
    noise: float

    @classmethod
    def for_world(cls, seed: int, feat_dim: int, noise: float) -> FeatureSpace:
        rng = np.random.default_rng([seed, _PROJECTION_STREAM])
        # Three one-hot rows are active per region: divide by sqrt(3) for unit variance.
        projection = rng.standard_normal((ATTRIBUTE_DIM, feat_dim), dtype=np.float32) / 3**0.5
        table = rng.standard_normal(_NOISE_TABLE + feat_dim - 1, dtype=np.float32)
        return cls(projection, sliding_window_view(table, feat_dim), noise)

    def regions(self, scene: Scene, rng: np.random.Generator) -> Regions:
        """Features, boxes and soft labels of every object; draws noise offsets from the sample's rng."""
        box = boxes(scene)
        attributes = np.concatenate([_one_hot_attributes(scene), box], axis=1)
        feat = attributes @ self.projection
        feat += self.noise * self.noise_windows[rng.integers(0, _NOISE_TABLE, size=len(box))]
        return Regions(_half(feat), box, soft_labels(scene, rng))


def boxes(scene: Scene) -> np.ndarray:
    """UNITER's 7-d boxes `[x1, y1, x2, y2, w, h, w*h]`, float32 (N, 7), normalised by the image size."""
    corners = np.array([o.box for o in scene.objects], dtype=np.float32).reshape(-1, 4)
    w = corners[:, 2] - corners[:, 0]
    h = corners[:, 3] - corners[:, 1]
    return np.concatenate([corners, w[:, None], h[:, None], (w * h)[:, None]], axis=1)


def soft_labels(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Detector class probabilities, float16 (N, C): softmax of noisy logits peaked on the true shape."""
    logits = rng.standard_normal((len(scene.objects), len(CLASS_NAMES)))
    logits[np.arange(len(scene.objects)), [o.label for o in scene.objects]] += _SOFT_PEAK
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return _half(probs / probs.sum(axis=1, keepdims=True))


def _one_hot_attributes(scene: Scene) -> np.ndarray:
    codes = np.zeros((len(scene.objects), ATTRIBUTE_DIM - BOX_DIM), dtype=np.float32)
    for i, o in enumerate(scene.objects):
        codes[i, SHAPES.index(o.shape)] = 1
        codes[i, len(SHAPES) + COLOURS.index(o.colour)] = 1
        codes[i, len(SHAPES) + len(COLOURS) + SIZES.index(o.size)] = 1
    return codes


def _half(x: np.ndarray) -> np.ndarray:
    """float16 copy of `x`; torch's vectorised cast is ~10x faster than numpy's, same rounding."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).half().numpy()
