"""`lottery ticket ...`: cut, inspect, verify, alias, export and apply tickets of a ticket store.

Each subcommand is one plain function of `lottery.tickets.jobs` (`cut_ticket`, `show_ticket`, ...)
or `lottery.tickets.export` (`export_ticket`); the `_cmd_*` adapters only turn parsed arguments into
a call and print. `add_ticket_commands` hangs them under the `ticket` command of the `lottery`
parser. A refused ticket, a missing file or store, or a bad argument value is one line on stderr and
exit code 2 (`verify` exits 1 when a check fails), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lottery.tickets.export import EXPORT_FORMATS, export_ticket
from lottery.tickets.jobs import (
    alias_ticket,
    apply_ticket,
    cut_ticket,
    list_tickets,
    show_ticket,
    verify_ticket,
)

if TYPE_CHECKING:
    from lottery.tickets import TicketStore


def _store(args: argparse.Namespace) -> TicketStore:
    from lottery.tickets import TicketStore, default_root

    return TicketStore(args.store if args.store is not None else default_root())


def _cmd_cut(args: argparse.Namespace) -> None:
    ticket_id = cut_ticket(
        Path(args.model),
        args.method,
        args.sparsity,
        _store(args),
        seed=args.seed,
        n=args.n,
        m=args.m,
        scope=args.scope,
        alias=args.alias,
    )
    print(ticket_id)


def _cmd_show(args: argparse.Namespace) -> None:
    show_ticket(_store(args), args.ref)


def _cmd_list(args: argparse.Namespace) -> None:
    store = _store(args)
    store.check_root()  # a mistyped --store is an error, not "no tickets"
    list_tickets(store)


def _cmd_resolve(args: argparse.Namespace) -> None:
    """One full id per ref, in order (``dense`` stays ``dense``): a job plan fixed before the jobs run.

    ``--out`` writes them to a file, whole or not at all: a plan other jobs read must never be half
    there, nor hold a library's log line that reached stdout.
    """
    from lottery.files import write_text_atomic

    store = _store(args)
    text = "\n".join(ref if ref == "dense" else store.resolve(ref) for ref in args.refs) + "\n"
    if args.out:
        write_text_atomic(Path(args.out), text)
    print(text, end="")


def _cmd_verify(args: argparse.Namespace) -> None:
    from lottery.tickets import TicketError

    try:
        passed = verify_ticket(
            _store(args), args.ref, Path(args.model), tuple(args.scope) if args.scope else None
        )
    except TicketError as err:
        print(f"FAILED {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"OK {args.ref}")
    for line in passed:
        print(f"  {line}")


def _cmd_alias(args: argparse.Namespace) -> None:
    ticket_id = alias_ticket(_store(args), args.name, args.ref)
    print(f"{args.name} -> {ticket_id}")


def _cmd_export(args: argparse.Namespace) -> None:
    out = export_ticket(
        _store(args), args.ref, Path(args.out), args.format, packed=args.packed, renames=args.rename
    )
    print(f"{args.ref} exported as {args.format}{' (packed)' if args.packed else ''} to {out}")


def _rename(text: str) -> tuple[str, str]:
    """`--rename OLD=NEW` as (OLD, NEW); NEW may be empty, to drop a prefix."""
    old, sep, new = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not OLD=NEW (e.g. uniter.=bert.)")
    return old, new


def _cmd_apply(args: argparse.Namespace) -> None:
    out = apply_ticket(_store(args), args.ref, Path(args.model), Path(args.out))
    print(f"{args.model} with ticket {args.ref} applied written to {out}")


def _cmd_publish(args: argparse.Namespace) -> None:
    from lottery.tickets.publish import publish

    publish(Path(args.run), args.sparsity, args.alias, args.store)


def _one_line_errors(job: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    """A refused ticket, a missing file or a bad argument value: one line on stderr, exit code 2."""

    def run(args: argparse.Namespace) -> None:
        from lottery.tickets import TicketError

        try:
            job(args)
        except (TicketError, OSError, ValueError) as err:
            message = " ".join(str(err).split())
            print(f"lottery ticket {args.ticket_command}: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None

    return run


def add_ticket_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `ticket` and its subcommands to the `lottery` parser's subcommands (sets `func` on each)."""
    ticket = subparsers.add_parser("ticket", help="cut, inspect, verify, alias, export and apply tickets")
    commands = ticket.add_subparsers(dest="ticket_command", required=True)
    store_help = "ticket store directory (default: $LOTTERY_TICKET_STORE, else ./tickets)"

    def command(name: str, job: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help)
        parser.add_argument("--store", default=None, help=store_help)
        parser.set_defaults(func=_one_line_errors(job))
        return parser

    cut = command("cut", _cmd_cut, "one-shot ticket from a model directory's weights")
    cut.add_argument("--model", required=True, help="model directory (config.json + model.safetensors)")
    cut.add_argument("--method", required=True, help="magnitude, magnitude-layerwise, random or nm")
    cut.add_argument("--sparsity", type=float, default=None, help="fraction pruned, e.g. 0.6 (not for nm)")
    cut.add_argument("--n", type=int, default=2, help="N of N:M (keep n of every m)")
    cut.add_argument("--m", type=int, default=4, help="M of N:M")
    cut.add_argument("--seed", type=int, default=0, help="seed of the random method")
    cut.add_argument(
        "--scope", action="append", help="prunable-scope regex (repeat; default: BERT-tickets scope)"
    )
    cut.add_argument("--alias", default=None, help="alias to point at the new ticket, e.g. uniter-mini/s60")

    show = command(
        "show", _cmd_show, "metadata and per-tensor sparsity of a ticket; flags tensors pruned >= 99%%"
    )
    show.add_argument("ref", help="ticket id, unique id prefix or alias")

    command("list", _cmd_list, "every ticket of the store")

    resolve = command("resolve", _cmd_resolve, "print the full id of each ref, one per line (job planning)")
    resolve.add_argument("refs", nargs="+", help="ticket ids, unique id prefixes or aliases; dense passes")
    resolve.add_argument("--out", default=None, help="also write the ids to this file (atomically)")

    verify = command(
        "verify", _cmd_verify, "check a ticket's hash, format and fit to a model (exit 1 if not)"
    )
    verify.add_argument("ref", help="ticket id, unique id prefix or alias")
    verify.add_argument("--model", required=True, help="model directory the ticket must fit")
    verify.add_argument("--scope", action="append", help="also require this scope (regex, repeat)")

    alias = command("alias", _cmd_alias, "point an alias at a ticket")
    alias.add_argument("name", help="alias, e.g. uniter-mini/pretrain/s60")
    alias.add_argument("ref", help="ticket id, unique id prefix or alias")

    export = command("export", _cmd_export, "write a ticket's masks as a plain safetensors file (no pickle)")
    export.add_argument("ref", help="ticket id, unique id prefix or alias")
    export.add_argument(
        "--format",
        required=True,
        choices=EXPORT_FORMATS,
        help="safetensors: one mask per parameter name; torch-prune: keys <module>.<parameter>_mask "
        "for torch.nn.utils.prune.custom_from_mask",
    )
    export.add_argument("--out", required=True, help="output file (replaced atomically)")
    export.add_argument(
        "--packed", action="store_true", help="safetensors only: bit-packed uint8 (numpy.packbits), not bool"
    )
    export.add_argument(
        "--rename",
        action="append",
        default=[],
        type=_rename,
        metavar="OLD=NEW",
        help="rename parameter-name prefix OLD to NEW, e.g. uniter.=bert. (repeat; the longest matching OLD applies)",
    )

    publish = command("publish", _cmd_publish, "put an IMP run's round closest to a sparsity under an alias")
    publish.add_argument("--run", required=True, help="IMP run directory (runs/imp/<method>-<digest>)")
    publish.add_argument("--sparsity", required=True, type=float, help="e.g. 0.6: the closest round is taken")
    publish.add_argument("--alias", required=True, help="e.g. uniter-mini/pretrain/s60")

    apply = command("apply", _cmd_apply, "a new model directory with the pruned weights set to 0")
    apply.add_argument("ref", help="ticket id, unique id prefix or alias")
    apply.add_argument("--model", required=True, help="model directory the ticket was cut for")
    apply.add_argument("--out", required=True, help="new model directory (must not exist)")


def main(argv: list[str] | None = None) -> None:
    """`lottery ticket ...` on its own, for tests and until the lottery parser includes it."""
    parser = argparse.ArgumentParser(prog="lottery")
    add_ticket_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
