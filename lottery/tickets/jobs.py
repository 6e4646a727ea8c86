"""The `lottery ticket ...` jobs: cut, show, list, verify, alias and apply tickets of a store.

Plain functions with typed arguments; `lottery/tickets/cli.py` only parses arguments and calls them.
They sit in `train/` because they join a model directory, the pruning criteria and the ticket store.
Export needs none of that: it is `lottery/tickets/export.py`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# a model directory's layout and fingerprint come from its own family (layout.py)
from lottery.tickets.layout import model_layout

if TYPE_CHECKING:
    from lottery.tickets import Ticket, TicketStore


def _check_against_model(ticket: Ticket, model_dir: Path, scope: Sequence[str] | None) -> tuple[str, str]:
    """Scope (when given) and fingerprint checks of `ticket` against a model directory; (name, fingerprint)."""
    from lottery.tickets import TicketError, check_model

    check_model(ticket, scope=scope)
    try:
        name, fingerprint, _ = model_layout(model_dir, ticket.masks.scope)
    except TicketError as err:
        raise TicketError(
            f"{ticket.source}: fingerprint check failed: the ticket's scope does not fit: {err}"
        ) from None
    check_model(ticket, fingerprint=fingerprint, model_name=name)
    return name, fingerprint


def cut_ticket(
    model_dir: Path,
    method: str,
    sparsity: float | None,
    store: TicketStore,
    *,
    seed: int = 0,
    n: int = 2,
    m: int = 4,
    scope: Sequence[str] | None = None,
    alias: str | None = None,
) -> str:
    """One-shot ticket from a model directory's weights, put in `store`; returns its id.

    `sparsity` is the fraction of the prunable weights pruned; N:M pruning sets it to 1 - n/m itself.
    `scope` defaults to the scope of the directory's family (UNITER: the BERT-tickets scope), and the
    ticket records that family.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    from lottery.models.families import family_of
    from lottery.models.uniter.checkpoint import CONFIG_FILE, WEIGHTS_FILE, format_shape
    from lottery.sparsity.criteria import METHODS, cut
    from lottery.tickets import TicketError, TicketMeta

    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "nm":
        sparsity = 1.0 - n / m
    elif sparsity is None:
        raise ValueError(f"--sparsity is required for method {method!r}")
    family = family_of(model_dir)
    scope = tuple(scope) if scope else family.scope()
    name, _, shapes = model_layout(model_dir, scope)
    weights_path = Path(model_dir) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} is missing; {model_dir} is not a complete model directory")
    raw = weights_path.read_bytes()  # read once: hashed for the digest, parsed for the weights
    try:
        tensors = load(raw)
    except SafetensorError as err:  # e.g. a torch.save pickle under the safetensors name: never unpickled
        raise TicketError(f"{weights_path}: not a readable safetensors file: {err}") from None
    missing = [p for p in shapes if p not in tensors]
    if missing:
        raise TicketError(f"{weights_path}: prunable weights missing from the file: {missing[:5]}")
    wrong = [
        f"{p} is {format_shape(tensors[p].shape)}, not {format_shape(s)}"
        for p, s in shapes.items()
        if tensors[p].shape != s
    ]
    if wrong:  # weights of another model under this config: the ticket would not fit the model it names
        raise TicketError(
            f"{weights_path}: weights of another model than {Path(model_dir) / CONFIG_FILE} describes "
            f"({len(wrong)} prunable tensors differ, e.g. {'; '.join(wrong[:2])})"
        )
    weights = {p: tensors[p].float() for p in shapes}
    masks = cut(weights, method, sparsity, scope=scope, seed=seed, n=n, m=m)
    digest = hashlib.sha256(
        json.dumps(
            {
                "weights_sha256": hashlib.sha256(raw).hexdigest(),
                "method": method,
                "sparsity": sparsity,
                "seed": seed,
                "n": n,
                "m": m,
                "scope": list(scope),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    meta = TicketMeta(family=family.name, model=name, method=method, config_digest=digest)
    return store.put(masks, meta, alias=alias)


def show_ticket(store: TicketStore, ref: str) -> None:
    """Print a ticket's metadata, its per-tensor sparsity, and a warning naming wiped-out tensors.

    The overall sparsity alone hides a tensor pruned (nearly) whole, e.g. an untrained pooler that
    global magnitude pruning takes first; the most pruned tensor is in the metadata, every tensor in
    the table (flagged `!! wiped out` at >= 99%), and the flagged ones again on the last line.
    """
    from lottery.sparsity import health

    ticket = store.load(ref)
    masks, meta = ticket.masks, ticket.meta
    aliases = [a for a, target in store.aliases().items() if target == ticket.id]
    most, most_sparsity = health.max_tensor(masks)
    fields = [
        ("ticket", ticket.id),
        ("file", ticket.source),
        ("aliases", ", ".join(aliases) or "-"),
        ("model", f"{meta.family} {meta.model}"),
        ("method", meta.method),
        ("sparsity", f"{masks.sparsity:.2%} ({masks.total - masks.kept} of {masks.total} pruned)"),
        ("max tensor", f"{most_sparsity:.2%} ({most})"),
        ("tasks", ", ".join(meta.tasks) or "-"),
        ("IMP round", str(meta.imp_round)),
        ("scope", json.dumps(list(masks.scope))),
        ("fingerprint", masks.fingerprint),
        ("config digest", meta.config_digest or "-"),
        ("code version", meta.code_version),
    ]
    width = max(len(key) for key, _ in fields)
    for key, value in fields:
        print(f"{key:<{width}}  {value}")
    print()
    print(health.render_table(masks))
    warning = health.warning_text(health.wiped_out(masks), f"ticket {ticket.id[:12]}")
    if warning:
        print()
        print(warning)


def list_tickets(store: TicketStore) -> None:
    """Print one row per stored ticket: short id, aliases, model, method, sparsity, tasks, round, size."""
    entries = store.list()
    if not entries:
        print(f"no tickets in {store.root}")
        return
    rows = []
    for entry in entries:
        meta = entry.meta
        if entry.problem:
            rows.append([entry.id[:12], ", ".join(entry.aliases), "?", "?", "?", "?", "?", str(entry.size)])
            continue
        rows.append(
            [
                entry.id[:12],
                ", ".join(entry.aliases) or "-",
                meta.get("model", "?"),
                meta.get("method", "?"),
                f"{float(meta.get('sparsity', 'nan')):.2%}",
                ", ".join(json.loads(meta.get("tasks", "[]"))) or "-",
                meta.get("imp_round", "?"),
                str(entry.size),
            ]
        )
    print_table(["id", "aliases", "model", "method", "sparsity", "tasks", "round", "bytes"], rows)
    for entry in entries:
        if entry.problem:
            print(f"unreadable: {entry.problem}", file=sys.stderr)


def verify_ticket(
    store: TicketStore, ref: str, model_dir: Path, scope: Sequence[str] | None = None
) -> list[str]:
    """Every check of a ticket against a model directory; the list of checks passed, or TicketError.

    Without `scope` the ticket's own scope is used to select the model's prunable weights (and the
    fingerprint check alone decides); with it, the scopes must also be equal.
    """
    from lottery.tickets import FORMAT_VERSION, read_ticket
    from lottery.tickets.format import FORMAT_NAME

    ticket_id, path, data = store.read_verified(ref)
    passed = [f"hash: content sha256 matches id {ticket_id[:12]}…"]
    ticket = read_ticket(data, str(path))
    passed.append(
        f"format: {FORMAT_NAME} v{FORMAT_VERSION}, {len(ticket.masks.masks)} masks match the recorded "
        "shapes and fingerprint"
    )
    name, fingerprint = _check_against_model(ticket, model_dir, scope)
    if scope is not None:
        passed.append(f"scope: equal to the given scope ({len(ticket.masks.scope)} patterns)")
    passed.append(f"fingerprint: {fingerprint[:12]}… matches model {name} ({model_dir})")
    return passed


def alias_ticket(store: TicketStore, name: str, ref: str) -> str:
    """Point alias `name` at the ticket `ref`; returns the id."""
    return store.alias(name, ref)


def apply_ticket(store: TicketStore, ref: str, model_dir: Path, out: Path) -> Path:
    """A new model directory `out` of `model_dir`'s family: `model_dir` with the ticket's pruned weights 0.

    `model_dir` is a pre-training directory (theta0) or a fine-tuned one (backbone + task head: the
    backbone keeps the pre-training names, so the same ticket applies and the head is copied as is).
    The fingerprint is checked before the weights are read. Files other than the config, weights and
    task description (e.g. the tokenizer) are copied along; `out` is written whole or not at all.
    """
    import torch

    from lottery.files import atomic_directory
    from lottery.models.families import family_of
    from lottery.models.uniter import task_head
    from lottery.models.uniter.checkpoint import CONFIG_FILE, TASK_FILE, WEIGHTS_FILE

    ticket = store.load(ref)
    _check_against_model(ticket, model_dir, None)
    family, head = family_of(model_dir), task_head(model_dir)
    model = family.load(model_dir) if head is None else family.load_finetuned(model_dir)
    with torch.no_grad():
        for name, mask in ticket.masks.masks.items():
            model.get_parameter(name).masked_fill_(~mask, 0.0)
    extra = {
        p.name: p
        for p in Path(model_dir).iterdir()
        if p.is_file() and p.name not in (CONFIG_FILE, WEIGHTS_FILE, TASK_FILE)
    }
    with atomic_directory(Path(out)) as partial:
        if head is None:
            family.write(model, partial, extra)
        else:
            family.save_finetuned(model.state_dict(), model.config, head, partial, extra_files=extra)
    return Path(out)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on stdout: with rich when installed, else plain aligned text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
        for line in [headers, ["-" * w for w in widths], *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        return
    table = Table(*headers)
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: natural width, no wrapped parameter names
        console = Console(width=10_000)
    console.print(table)
