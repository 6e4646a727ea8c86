"""An encoded image as the patch grid a patch model (ViLT) reads, carried in the region slots of a batch.

Patch models read pixels, region models read detector features, and every collate step, packing and
task adapter of the project is written for regions. Rather than a second batch layout, a patch model's
image travels as its patches: an image of `image_size`² pixels becomes `side`² "regions", each the
flattened (3, p, p) pixels of one patch (channels first, so it is the input a stride-p convolution
reads at that place) with the patch cell as its box. The model folds them back into an image
(`to_pixels`) and runs its own patch embedding on it, so its parameters and names stay the stock ones.

Pixels are normalised as ViLT's processor does (mean 0.5, std 0.5 per channel, so [-1, 1]); an image
of another size is resized to the square grid first (the rendered shapes world already has the size).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from lottery.data.schema import BOX_DIM, IMAGE_MAGIC, shard_error


@dataclass(frozen=True)
class PatchGrid:
    """How a patch model cuts an image: `image_size` pixels a side in `patch_size` squares."""

    image_size: int
    patch_size: int

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.image_size < self.patch_size or self.image_size % self.patch_size:
            raise ValueError(
                f"patch grid: image_size {self.image_size} must be a positive multiple of patch_size "
                f"{self.patch_size}"
            )

    @property
    def side(self) -> int:
        """Patches along each axis."""
        return self.image_size // self.patch_size

    @property
    def feat_dim(self) -> int:
        """The size of one patch's "region feature": its 3 x p x p pixels."""
        return 3 * self.patch_size**2

    @cached_property
    def boxes(self) -> np.ndarray:
        """float32 (side², 7): each patch cell as a 7-d box `[x1, y1, x2, y2, w, h, w*h]`, row by row."""
        step = 1.0 / self.side
        rows, cols = np.divmod(np.arange(self.side**2), self.side)
        x1, y1 = cols * step, rows * step
        box = np.stack([x1, y1, x1 + step, y1 + step], axis=1)
        extra = np.full((len(box), BOX_DIM - 4), [step, step, step * step])
        return np.concatenate([box, extra], axis=1).astype(np.float32)

    def patches(self, sample: dict, shard: str) -> tuple[Tensor, Tensor]:
        """(feat (side², 3p²), box (side², 7)) float32 of the sample's `png` or `jpg`; a sample without
        one, or bytes that do not decode, raise `ShardError` naming the shard and the key."""
        key = sample.get("__key__")
        field = next((f for f in IMAGE_MAGIC if f in sample), None)
        if field is None:
            raise shard_error(
                shard,
                key,
                "no image (png or jpg) for a patch model; render the shapes world with `lottery data shapes "
                "--render SIZE` or convert a dataset that has images",
            )
        try:
            with Image.open(io.BytesIO(sample[field])) as image:
                rgb = image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise shard_error(shard, key, f"cannot decode {field!r} ({err})") from err
        if rgb.size != (self.image_size, self.image_size):
            rgb = rgb.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
        return self.cut(pixels), torch.from_numpy(self.boxes)

    def cut(self, pixels: Tensor) -> Tensor:
        """(3, H, W) -> (side², 3p²): the patches in row order, each flattened channels first."""
        p, s = self.patch_size, self.side
        return pixels.reshape(3, s, p, s, p).permute(1, 3, 0, 2, 4).reshape(s * s, 3 * p * p)

    def to_pixels(self, patches: Tensor) -> Tensor:
        """(B, side², 3p²) -> (B, 3, H, W): the inverse of `cut`, batched, on the patches' device."""
        p, s = self.patch_size, self.side
        batch = patches.size(0)
        return patches.reshape(batch, s, s, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(batch, 3, s * p, s * p)
