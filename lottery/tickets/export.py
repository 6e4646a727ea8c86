"""`lottery ticket export`: a ticket's masks as a plain safetensors file, for code outside vl-lottery.

Both formats are safetensors (no pickle: loading one runs no code), one tensor per prunable
parameter, written atomically:

- `safetensors`: key = the parameter name, e.g. `uniter.encoder.layer.0.output.dense.weight`; a
  `torch.bool` tensor of the parameter's shape (True = kept), or with `packed` the uint8
  `numpy.packbits` of the row-major flattened mask (big-endian bit order, 1 = kept, the last byte
  zero-padded), as in the ticket file itself; the metadata `shapes` unpacks it:
  `np.unpackbits(bits, count=prod(shape), bitorder="big").reshape(shape)`.
- `torch-prune`: key = the buffer `torch.nn.utils.prune` registers for the weight,
  `<module path>.<parameter>_mask` (`uniter.encoder.layer.0.output.dense.weight_mask`), a bool
  tensor of the weight's shape, so that per key
  `module, name = key.removesuffix("_mask").rsplit(".", 1)` and
  `prune.custom_from_mask(model.get_submodule(module), name, mask)` install the ticket, and the keys
  are those of the pruned model's state dict.

`renames` maps parameter-name prefixes (`("uniter.", "bert.")`) for another model's names. The
metadata (all strings) carries the ticket's provenance from its header (family, model, method,
tasks, IMP round, config digest, code version, sparsity, scope, fingerprint: the last two refer to
the ticket's own names, before any rename), plus `ticket` (its id), `packing`, `shapes` (file key ->
shape) and `renames`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lottery.files import write_bytes_atomic
from lottery.tickets.renaming import RenameCollision, rename_all, unused_prefixes

if TYPE_CHECKING:
    from lottery.tickets import Ticket, TicketStore

EXPORT_FORMATS = ("safetensors", "torch-prune")
FORMAT_NAME = "vl-lottery-masks"  # not the ticket format: the names may be renamed, the masks unpacked
FORMAT_VERSION = 1
_PRUNE_SUFFIX = "_mask"  # torch.nn.utils.prune keeps the mask of parameter `p` as the buffer `p_mask`


def export_ticket(
    store: TicketStore,
    ref: str,
    out: Path,
    fmt: str,
    *,
    packed: bool = False,
    renames: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write the ticket `ref` of `store` to `out` in format `fmt`; `out` is replaced atomically.

    Everything is checked (format, renames) before `out` is touched, so a refused export keeps
    the old file.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if packed and fmt != "safetensors":
        raise ValueError(
            f"--packed is for --format safetensors only: {fmt} needs masks of the weights' shapes"
        )
    data = export_bytes(store.load(ref), fmt, packed=packed, renames=renames)
    return write_bytes_atomic(Path(out), data)


def export_bytes(
    ticket: Ticket, fmt: str, *, packed: bool = False, renames: Sequence[tuple[str, str]] = ()
) -> bytes:
    """The safetensors bytes of `ticket` in format `fmt` (see the module docstring)."""
    import torch  # here, not at import: `lottery ticket --help` reads EXPORT_FORMATS without torch
    from safetensors.torch import save

    names = export_names(ticket, renames)
    suffix = _PRUNE_SUFFIX if fmt == "torch-prune" else ""
    if fmt == "torch-prune":
        _check_module_paths(names, ticket)
    masks = ticket.masks.masks
    values: Mapping[str, torch.Tensor]
    if packed:
        values = {name: torch.from_numpy(bits) for name, bits in ticket.masks.packed().items()}
    else:
        values = masks
    tensors = {names[name] + suffix: value.contiguous() for name, value in values.items()}
    shapes = {names[name] + suffix: list(mask.shape) for name, mask in masks.items()}
    return save(tensors, metadata=export_metadata(ticket, shapes, packed=packed, renames=renames))


def export_metadata(
    ticket: Ticket, shapes: Mapping[str, list[int]], *, packed: bool, renames: Sequence[tuple[str, str]]
) -> dict[str, str]:
    """The string metadata of an export: the ticket header's provenance and how to read the tensors."""
    from lottery.tickets.format import ticket_metadata

    provenance = {
        key: value
        for key, value in ticket_metadata(ticket.masks, ticket.meta).items()
        if key not in ("format", "format_version", "shapes")
    }
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "ticket": ticket.id,
        **provenance,
        "packing": "packbits" if packed else "none",
        "shapes": json.dumps(shapes, separators=(",", ":")),  # in the ticket's (scope) order
        "renames": json.dumps([list(pair) for pair in renames], separators=(",", ":")),
    }


def export_names(ticket: Ticket, renames: Sequence[tuple[str, str]]) -> dict[str, str]:
    """ticket name -> exported name under `renames` ((OLD, NEW) pairs, the longest OLD a name starts
    with applies: tickets/renaming.py). A rename that renames nothing is refused (a typo would otherwise
    export the names unchanged, and nothing would match the other model), and so are an OLD given twice
    and two names renamed to one."""
    rename = dict(renames)
    if len(rename) != len(renames):
        twice = next(old for old, _ in renames if sum(o == old for o, _ in renames) > 1)
        raise ValueError(f"--rename {twice}=...: given more than once; give each prefix one new name")
    names = list(ticket.masks.masks)
    unused = unused_prefixes(names, rename)
    if unused:
        starts = sorted({name.split(".", 1)[0] + "." for name in names})
        raise ValueError(
            f"--rename {unused[0]}={rename[unused[0]]}: no parameter name of ticket {ticket.id[:12]} starts "
            f"with {unused[0]!r}; its names start with {', '.join(starts)}"
        )
    try:
        by_new = rename_all(names, rename)
    except RenameCollision as err:
        raise ValueError(f"--rename: {err}") from None
    return {name: new for new, name in by_new.items()}


def _check_module_paths(names: Mapping[str, str], ticket: Ticket) -> None:
    """torch-prune keys need `<module path>.<parameter>`: the recipe splits them at the last dot."""
    for name, new in names.items():
        module, _, parameter = new.rpartition(".")
        if not module or not parameter:
            raise ValueError(
                f"ticket {ticket.id[:12]}: {name} exported as {new!r}, which is not <module path>.<parameter> "
                "(e.g. bert.pooler.dense.weight); torch-prune keys must name a submodule's parameter"
            )
