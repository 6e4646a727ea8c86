"""`launch_ranks` gives each multi-rank job a port of its own instead of the launcher's default."""

from __future__ import annotations

import socket
import subprocess
from types import SimpleNamespace

from lottery.train import workers


def test_each_launch_meets_on_a_free_port_not_the_default(monkeypatch):
    commands = []
    monkeypatch.setattr(
        subprocess, "run", lambda command, env: commands.append(command) or SimpleNamespace(returncode=0)
    )
    workers.launch_ranks(["imp", "--config", "x"], 2, "IMP")
    command = commands[0]
    port = int(command[command.index("--master_port") + 1])
    assert port != 29500 and command.index("--master_port") < command.index("--module")
    with socket.socket() as sock:  # nothing listens there: a job can bind it
        sock.bind(("127.0.0.1", port))
