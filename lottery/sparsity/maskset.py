"""MaskSet: which weights of the prunable scope survive (True = kept), with the scope and fingerprint.

Masks are bool tensors of each parameter's full shape, on the CPU: a ticket is the whole mask anyway,
and a bool is a quarter of the fp32 weight it guards. Bit packing follows `numpy.packbits` on the
row-major flattened mask (big-endian bit order), so any numpy user can read a ticket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from lottery.sparsity.scope import DEFAULT_SCOPE, fingerprint


@dataclass(frozen=True)
class MaskSet:
    masks: Mapping[str, Tensor]  # name -> bool tensor of the parameter's full shape, in scope order
    scope: tuple[str, ...] = DEFAULT_SCOPE
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        for name, mask in self.masks.items():
            if mask.dtype != torch.bool:
                raise TypeError(f"mask {name}: dtype {mask.dtype}, expected torch.bool")
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.shapes()))

    @classmethod
    def dense(cls, shapes: Mapping[str, Sequence[int]], scope: Sequence[str] = DEFAULT_SCOPE) -> MaskSet:
        """Every weight kept: the start of IMP."""
        return cls({n: torch.ones(tuple(s), dtype=torch.bool) for n, s in shapes.items()}, tuple(scope))

    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(name, tuple(mask.shape)) for name, mask in self.masks.items()]

    @property
    def total(self) -> int:
        return sum(mask.numel() for mask in self.masks.values())

    @property
    def kept(self) -> int:
        return sum(int(mask.sum()) for mask in self.masks.values())

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights that are pruned."""
        return 1.0 - self.kept / self.total

    def layer_sparsity(self) -> dict[str, float]:
        return {name: 1.0 - float(mask.sum()) / mask.numel() for name, mask in self.masks.items()}

    def same_layout(self, other: MaskSet) -> bool:
        return self.fingerprint == other.fingerprint and self.shapes() == other.shapes()

    def hamming(self, other: MaskSet) -> int:
        """Number of weights whose kept/pruned state differs (the masks must share a layout)."""
        self._check_layout(other)
        return sum(int((a != other.masks[n]).sum()) for n, a in self.masks.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskSet):
            return NotImplemented
        return (
            self.scope == other.scope
            and self.same_layout(other)
            and all(torch.equal(m, other.masks[n]) for n, m in self.masks.items())
        )

    __hash__ = None  # type: ignore[assignment]  # mutable tensors inside

    def packed(self) -> dict[str, np.ndarray]:
        """name -> uint8 array of `numpy.packbits` over the row-major flattened mask (1 = kept)."""
        return {n: np.packbits(m.reshape(-1).numpy(), bitorder="big") for n, m in self.masks.items()}

    @classmethod
    def unpack(
        cls,
        packed: Mapping[str, np.ndarray],
        shapes: Mapping[str, Sequence[int]],
        scope: Sequence[str] = DEFAULT_SCOPE,
    ) -> MaskSet:
        """Inverse of `packed`; refuses a byte count that does not fit the shape."""
        masks = {}
        for name, shape in shapes.items():
            numel = int(np.prod(shape, dtype=np.int64))
            bits = np.asarray(packed[name], dtype=np.uint8).reshape(-1)
            if bits.size != (numel + 7) // 8:
                raise ValueError(
                    f"mask {name}: {bits.size} bytes cannot hold {numel} bits of shape {tuple(shape)}"
                )
            flat = np.unpackbits(bits, count=numel, bitorder="big").astype(bool)
            masks[name] = torch.from_numpy(flat).reshape(tuple(shape))
        return cls(masks, tuple(scope))

    def _check_layout(self, other: MaskSet) -> None:
        if not self.same_layout(other):
            raise ValueError(
                f"masks of different layouts (fingerprint {self.fingerprint[:12]} vs {other.fingerprint[:12]})"
            )
