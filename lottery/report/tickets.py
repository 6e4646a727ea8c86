"""The tickets a report's fine-tunes used, checked per tensor: the most pruned tensor and the wiped-out ones.

A ticket's overall sparsity (the report's "60%", "70%") says nothing about how it is spread: global
magnitude pruning takes a tensor on a smaller scale first, and on uniter-mini it pruned the untrained
pooler 99.46% and 99.96%, so the pooled output was a constant and so was every answer from it. A
report row that looks like "the ticket lost the task" may be that. Each ticket is read again from
the store its fine-tune named (metrics.json `config.store`, "" = `$LOTTERY_TICKET_STORE` or
./tickets, relative to where the report runs); a store that is gone or a ticket that cannot be read
is said, with the file and the problem, in place of its figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lottery.report.collect import Result
from lottery.sparsity import health
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketError, TicketStore, default_root


@dataclass(frozen=True)
class TicketCheck:
    """One ticket used by the report's runs, and what its per-tensor sparsity says."""

    ticket_id: str  # full id; "" when the runs' metrics.json do not record one
    names: tuple[str, ...]  # how the runs named it (alias or id)
    method: str
    sparsity: float  # overall, as the runs recorded it (the mask's own when it was read)
    runs: int  # fine-tunes that used it
    store: str  # the store it was read from (or looked for in)
    max_tensor: str = ""
    max_tensor_sparsity: float | None = None  # None: not checked (see `problem`)
    wiped_out: Mapping[str, float] = field(default_factory=dict)  # name -> sparsity, pruned >= 99%
    problem: str = ""  # why it was not checked: the store or file, and what is wrong with it


def store_root(store: str) -> Path:
    """The store a fine-tune read its ticket from: its config's `store`, else the default."""
    return Path(store) if store else default_root()


def _load(ticket_id: str, roots: list[Path]) -> tuple[Path, MaskSet | None, str]:
    """(store, MaskSet or None, problem) from the first of `roots` that yields the ticket."""
    problems = []
    for root in roots:
        if not root.is_dir():
            problems.append(f"store {root} is gone (no such directory)")
            continue
        try:
            return root, TicketStore(root).load(ticket_id).masks, ""
        except (TicketError, OSError) as err:
            problems.append(" ".join(str(err).split()))
    return roots[0], None, "; ".join(problems)


def check_tickets(results: list[Result]) -> list[TicketCheck]:
    """Each ticket of `results` (dense runs have none), in first-seen order, read and checked once."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        if r.method != "dense":
            groups.setdefault(r.ticket_id or f"name:{r.ticket}", []).append(r)
    checks = []
    for key, runs in groups.items():
        ticket_id = "" if key.startswith("name:") else key
        roots = list(dict.fromkeys(store_root(r.store) for r in runs))
        names = tuple(dict.fromkeys(r.ticket for r in runs))
        common = {"names": names, "method": runs[0].method, "runs": len(runs)}
        if not ticket_id:
            checks.append(
                TicketCheck(
                    "",
                    **common,
                    sparsity=runs[0].sparsity,
                    store=str(roots[0]),
                    problem=f"{runs[0].path}/metrics.json records no ticket id (ticket_meta.id)",
                )
            )
            continue
        root, masks, problem = _load(ticket_id, roots)
        if masks is None:
            checks.append(
                TicketCheck(ticket_id, **common, sparsity=runs[0].sparsity, store=str(root), problem=problem)
            )
            continue
        digest = health.summary(masks)
        checks.append(
            TicketCheck(
                ticket_id,
                **common,
                sparsity=masks.sparsity,
                store=str(root),
                max_tensor=digest["max_tensor"],
                max_tensor_sparsity=digest["max_tensor_sparsity"],
                wiped_out=digest["wiped_out"],
            )
        )
    return checks


def label(check: TicketCheck) -> str:
    """The ticket's short id, or how the runs named it when they recorded no id."""
    return check.ticket_id[:12] if check.ticket_id else check.names[0]


def warnings(checks: list[TicketCheck]) -> list[str]:
    """One line per ticket that wipes out a tensor, and one per ticket that could not be checked."""
    lines = []
    for check in checks:
        if check.problem:
            lines.append(f"ticket {label(check)} was not checked per tensor: {check.problem}")
        elif check.wiped_out:
            lines.append(health.warning_text(check.wiped_out, f"ticket {label(check)}"))
    return lines


def markdown(checks: list[TicketCheck]) -> str:
    """The report's section on its tickets: one table row each, then the warnings; "" without tickets."""
    if not checks:
        return ""
    lines = [
        "## Tickets: per-tensor sparsity",
        "",
        f"A prunable tensor pruned >= {health.WIPED_OUT:.0%} is wiped out: it passes on (nearly) its "
        "bias alone. Global magnitude pruning takes a tensor on a smaller scale first (an untrained "
        "pooler), which the overall sparsity does not show.",
        "",
        f"| ticket | used as | method | sparsity | runs | max per-tensor sparsity | "
        f"wiped out (>= {health.WIPED_OUT:.0%}) |",
        "|" + " --- |" * 7,
    ]
    for check in checks:
        names = ", ".join(n[:12] if n == check.ticket_id else n for n in check.names)
        if check.max_tensor_sparsity is None:
            most, wiped = "not checked", "?"
        else:
            most = f"{check.max_tensor_sparsity:.2%} ({check.max_tensor})"
            wiped = ", ".join(f"**!! {n} {s:.2%}**" for n, s in check.wiped_out.items()) or "none"
        lines.append(
            f"| {label(check)} | {names} | {check.method} | {check.sparsity:.2%} | {check.runs} | "
            f"{most} | {wiped} |"
        )
    notes = warnings(checks)
    if notes:
        lines += ["", *(f"- {line}" for line in notes)]
    return "\n".join(lines) + "\n"
