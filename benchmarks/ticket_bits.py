"""Figure 1: ticket file bits per prunable weight at the uniter-base scope (target <= 1.01).

A ticket is one safetensors file of bit-packed masks plus a JSON header naming every parameter and its
shape, so its size is about one bit a weight plus a fixed header; the ratio shows whether the header
(or per-tensor padding to a byte) matters at this scale. The masks are a seeded random 60% over the
uniter-base prunable shapes (85,524,480 weights), built from shapes alone. `--quick` changes nothing:
the figure takes a few seconds.

Usage, from the repo root:  python benchmarks/ticket_bits.py [--json out.json]
"""

from __future__ import annotations

import argparse

from rows import Row, add_output_flags, emit
from scope_masks import prunable_shapes, random_masks

from lottery.sparsity.maskset import MaskSet
from lottery.tickets.format import TicketMeta, ticket_bytes

TARGET = "<= 1.01"


def bits_per_weight(masks: MaskSet, model: str) -> tuple[float, int, int]:
    """(bits per prunable weight, file bytes, header bytes) of the ticket file of `masks`."""
    data = ticket_bytes(masks, TicketMeta(family="uniter", model=model, method="random"))
    header = 8 + int.from_bytes(data[:8], "little")
    return 8 * len(data) / masks.total, len(data), header


def measure(shapes: dict[str, tuple[int, ...]], model: str, sparsity: float = 0.6) -> Row:
    """Figure 1's row for the prunable `shapes` of `model`."""
    masks = random_masks(shapes, sparsity)
    bits, size, header = bits_per_weight(masks, model)
    return Row(
        figure=f"1. ticket bits / prunable weight ({model} scope, {masks.total / 1e6:.1f}M, 60% random)",
        measured=bits,
        target=TARGET,
        note=f"{size:,} bytes, of which header {header:,}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_flags(parser)
    args = parser.parse_args()
    emit([measure(prunable_shapes("uniter-base"), "uniter-base")], args.json)


if __name__ == "__main__":
    main()
