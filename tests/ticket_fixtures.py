"""Ticket test fixtures shared by the ticket format, store, CLI and export tests."""

from __future__ import annotations

from lottery.tickets import TicketMeta

# sizes that are not multiples of 8, so the last byte of every packed mask is partly padding
ODD_SHAPES: dict[str, tuple[int, ...]] = {
    "uniter.encoder.layer.0.attention.self.query.weight": (13, 7),
    "uniter.encoder.layer.0.output.dense.weight": (5, 11),
    "uniter.pooler.dense.weight": (3, 3),
}
TICKET_META = TicketMeta(
    family="uniter",
    model="tiny",
    method="magnitude",
    tasks=("itm", "mlm"),
    imp_round=2,
    config_digest="ab" * 32,
    code_version="0.1.0",
)


def run_ticket_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `lottery ticket <argv>`, in-process."""
    from lottery.tickets.cli import main

    try:
        main(["ticket", *argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
