"""Run the ``dafnet`` CLI in-process from a test: exit code and captured output."""

from __future__ import annotations

from dafnet.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``dafnet ARGS`` (arguments are str()-ed)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
