"""Progress bars that suit where the output goes: a live bar on a terminal, plain lines in a log file.

tqdm redraws its bar with carriage returns. On a terminal that is one line updating in place; in a
SLURM ``.out`` file or a CI log it is one ever-growing line of hundreds of redraws. Off a terminal the
bar is therefore written as a whole line at most every `LOG_INTERVAL` seconds (and at the end).
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two progress lines in a log file


class _WholeLines:
    """A stream for tqdm that writes each redraw as one line: carriage returns dropped, a newline added."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(
    *,
    total: int,
    desc: str,
    enabled: bool = True,
    initial: int = 0,
    unit: str = "it",
    stream: TextIO | None = None,
) -> tqdm:
    """A tqdm bar on `stream` (default stderr): live on a terminal, a line every 30 s elsewhere."""
    stream = stream or sys.stderr
    common = {"total": total, "initial": initial, "desc": desc, "unit": unit, "disable": not enabled}
    if stream.isatty():
        return tqdm(**common, file=stream, dynamic_ncols=True)
    return tqdm(**common, file=_WholeLines(stream), mininterval=LOG_INTERVAL, ascii=True, ncols=100)
