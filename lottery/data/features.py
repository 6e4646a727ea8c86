"""Detector-like region features for shapes-world scenes, in place of a Faster R-CNN.

A region's feature is a fixed random projection of its attributes (one-hot shape, colour and size,
plus its box) with Gaussian noise on top. The projection depends only on the world seed, so the same
attributes always point the same way in every sample and split, as a real detector's features do; the
noise is drawn per sample, so no two regions are identical and the model must read attributes out of
a noisy 2048-d vector rather than look them up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lottery.data.world import CLASS_NAMES, COLOURS, SHAPES, SIZES, Scene

BOX_DIM = 7
# Rows of the attribute encoding: one-hot shape, one-hot colour, one-hot size, then the 7-d box.
ATTRIBUTE_DIM = len(SHAPES) + len(COLOURS) + len(SIZES) + BOX_DIM

# Seeds the projection as default_rng([world_seed, _PROJECTION_STREAM]); samples use
# [seed, split_id, index], and SeedSequence ignores trailing zeros, so this tag must not be a split id.
_PROJECTION_STREAM = 0x70726F6A
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
    """The world's fixed "detector": projection (ATTRIBUTE_DIM, feat_dim) and per-region noise std.

    The projection is scaled so that the attribute signal has about unit variance per feature
    dimension; `noise` is the noise std in the same unit.
    """

    projection: np.ndarray
    noise: float

    @classmethod
    def for_world(cls, seed: int, feat_dim: int, noise: float) -> FeatureSpace:
        rng = np.random.default_rng([seed, _PROJECTION_STREAM])
        # Three one-hot rows are active per region: divide by sqrt(3) for unit variance.
        return cls(rng.standard_normal((ATTRIBUTE_DIM, feat_dim), dtype=np.float32) / 3**0.5, noise)

    def regions(self, scene: Scene, rng: np.random.Generator) -> Regions:
        """Features, boxes and soft labels of every object; draws the noise from the sample's rng."""
        box = boxes(scene)
        attributes = np.concatenate([_one_hot_attributes(scene), box], axis=1)
        feat = attributes @ self.projection
        feat += self.noise * rng.standard_normal(feat.shape, dtype=np.float32)
        return Regions(feat.astype(np.float16), box, soft_labels(scene, rng))


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
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float16)


def _one_hot_attributes(scene: Scene) -> np.ndarray:
    codes = np.zeros((len(scene.objects), ATTRIBUTE_DIM - BOX_DIM), dtype=np.float32)
    for i, o in enumerate(scene.objects):
        codes[i, SHAPES.index(o.shape)] = 1
        codes[i, len(SHAPES) + COLOURS.index(o.colour)] = 1
        codes[i, len(SHAPES) + len(COLOURS) + SIZES.index(o.size)] = 1
    return codes
