"""``metrics.jsonl``: one JSON line per logged step or validation, written by rank 0 only.

On resume the log is cut back to the checkpoint's step, so steps that ran after the last checkpoint
(and will run again) are not counted twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lottery.files import write_text_atomic


class MetricsLog:
    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (atomically: temp file, then rename)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [
            line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step
        ]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
