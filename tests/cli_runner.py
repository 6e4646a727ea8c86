"""Run the `lottery` command in-process, as a test sees it: (exit code, stdout, stderr)."""

from __future__ import annotations

from lottery.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
