"""Per-tensor health of a mask: which prunable tensors a ticket has (nearly) wiped out.

Global magnitude pruning ranks every prunable weight against every other, so a tensor whose weights
are on a smaller scale than the rest goes first, whatever it does. Measured on uniter-mini: its pooler
was never trained (std 0.009 vs 0.039 for the encoder weights) and IMP pruned it 99.46% and 99.96%;
the pooled output became a constant and every head over it answered a constant, while the ticket's
overall sparsity (60%, 70%) looked normal. The overall figure hides this, so everything that shows a
ticket (`lottery ticket show`, IMP's round table, the report) also shows its per-tensor sparsity and
names the tensors pruned >= `WIPED_OUT`.

Plain functions over a `MaskSet` (or over a name -> sparsity map already computed, e.g. read back from
rounds.json), so the same figures and wording appear everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from lottery.sparsity.maskset import MaskSet

# a tensor with >= 99% of its weights pruned passes (nearly) nothing but its bias on: wiped out
WIPED_OUT = 0.99
# float slack for "exactly 99%": 1 - 1/100 is not bit-equal to 0.99 on every platform
_EPS = 1e-9
# rows of one layer are printed together: the prefix up to the first numeric part of the name
_GROUP = re.compile(r"^(.*?\.\d+)\.")


def tensor_sparsity(masks: MaskSet) -> dict[str, float]:
    """name -> fraction of that tensor's weights pruned, in the mask's (scope) order."""
    return masks.layer_sparsity()


def flagged(sparsity: Mapping[str, float], threshold: float = WIPED_OUT) -> dict[str, float]:
    """The tensors of a name -> sparsity map pruned >= `threshold`, in the map's order."""
    return {name: s for name, s in sparsity.items() if s >= threshold - _EPS}


def wiped_out(masks: MaskSet, threshold: float = WIPED_OUT) -> dict[str, float]:
    """name -> sparsity of the prunable tensors pruned >= `threshold` (default 99%), in scope order."""
    return flagged(tensor_sparsity(masks), threshold)


def max_tensor(masks: MaskSet) -> tuple[str, float]:
    """(name, sparsity) of the most pruned tensor (the first in scope order on a tie)."""
    per_tensor = tensor_sparsity(masks)
    name = max(per_tensor, key=lambda n: per_tensor[n])
    return name, per_tensor[name]


def summary(masks: MaskSet, threshold: float = WIPED_OUT) -> dict[str, object]:
    """A JSON-able digest for tables: the most pruned tensor, its sparsity, and the wiped-out tensors."""
    name, sparsity = max_tensor(masks)
    return {"max_tensor": name, "max_tensor_sparsity": sparsity, "wiped_out": wiped_out(masks, threshold)}


def warning_text(
    flagged_tensors: Mapping[str, float], subject: str = "this ticket", threshold: float = WIPED_OUT
) -> str:
    """One line naming every wiped-out tensor and its sparsity; "" when there is none.

    `subject` says whose mask it is (e.g. "ticket 1a2b3c4d5e6f", "round 5's mask").
    """
    if not flagged_tensors:
        return ""
    count = len(flagged_tensors)
    names = ", ".join(f"{name} {s:.2%}" for name, s in flagged_tensors.items())
    return (
        f"WARNING: {subject} wipes out {count} prunable tensor{'s' if count > 1 else ''} "
        f"(>= {threshold:.0%} of its weights pruned): {names}; such a tensor passes on (nearly) its bias "
        "alone (a wiped-out pooler makes the pooled output, and every answer from it, a constant)"
    )


def render_table(masks: MaskSet, threshold: float = WIPED_OUT) -> str:
    """Aligned text, one row per tensor (name, shape, kept, total, sparsity), a blank line between
    layers, and `!! wiped out` beside each tensor pruned >= `threshold`.

    Full names stay on every row so that `grep` on a parameter name finds its row.
    """
    per_tensor = tensor_sparsity(masks)
    bad = flagged(per_tensor, threshold)
    headers = ("parameter", "shape", "kept", "total", "sparsity", "")
    rows: list[tuple[str, ...] | None] = []  # None: a blank line between groups
    group = None
    for name, mask in masks.masks.items():
        match = _GROUP.match(name)
        key = match.group(1) if match else ""
        if rows and key != group:
            rows.append(None)
        group = key
        rows.append(
            (
                name,
                "x".join(map(str, mask.shape)),
                str(int(mask.sum())),
                str(mask.numel()),
                f"{per_tensor[name]:.2%}",
                "!! wiped out" if name in bad else "",
            )
        )
    cells = [headers, *(r for r in rows if r is not None)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right = (False, True, True, True, True, False)  # numbers right-aligned

    def line(row: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths[:-1])]
    out += ["" if row is None else line(row) for row in rows]
    return "\n".join(out)
