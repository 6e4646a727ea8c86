"""Publishing into a store that several jobs share: one alias writer at a time, and the first one wins.

Moving an alias takes ``<store>/alias.lock`` (a POSIX record lock, which NFS forwards to its server,
unlike ``flock`` on older clients). A job that says which id the alias held when it began (``expect``)
does not move it when another job did in the meantime: the first to publish wins, and the later one
gets `AliasTaken`, naming the winner from the store's log, so both know which ticket the alias holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from lottery.tickets.format import TicketError

ANY = object()  # `alias(expect=ANY)`: move the alias whatever it points at now


class AliasTaken(TicketError):
    """Another job moved an alias after this one began: that job's ticket keeps it."""

    def __init__(self, alias: str, winner: str, by: str, ours: str) -> None:
        super().__init__(
            f"alias {alias!r} was published by another job while this one ran ({by}): it keeps "
            f"{winner[:12]}; this job's ticket {ours[:12]} is stored (`lottery ticket alias {alias} "
            f"{ours[:12]}` moves the alias to it)"
        )
        self.alias, self.winner, self.ours = alias, winner, ours


@contextlib.contextmanager
def alias_lock(root: Path) -> Iterator[None]:
    """Hold the store's alias lock (blocking) for the body."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / "alias.lock", "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def last_writer(log_path: Path, alias: str) -> str:
    """ "host H, pid P, <time>: <command>" of the store log's last line that moved `alias`."""
    lines = log_path.read_text().splitlines() if log_path.is_file() else []
    for line in reversed(lines):
        record = json.loads(line)
        if record.get("event") == "alias" and record.get("alias") == alias:
            return f"host {record['host']}, pid {record['pid']}, {record['time']}: {record['command']}"
    return "a writer that left no log line"
