"""Consoles that people and logs can both read.

On a terminal a rich console is what it always was: as wide as the terminal, with live displays.
When its stream is not a terminal (piped to a file, ``nohup``, CI, an experiment cell's log),
rich would cut every table at 80 columns (or at the width of whatever terminal the process was
started from) and show a live display only when it ends; there the console is
:data:`WIDE` columns wide unless ``COLUMNS`` says otherwise, so tables and paths print whole,
and :func:`is_live` tells the training display to print plain lines instead.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.rule import Rule

WIDE = 1000
"""Columns of a console whose stream is not a terminal (and no ``COLUMNS`` is set)."""


def is_live(console: Console) -> bool:
    """Whether ``console`` writes to a terminal (or a notebook) that live displays can redraw."""
    if console.is_jupyter:
        return True
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(console.is_terminal and isatty is not None and isatty())
    except (OSError, ValueError):  # a closed or odd stream
        return False


def make_console(**kwargs) -> Console:
    """``rich.console.Console(**kwargs)``, :data:`WIDE` when its stream is not a terminal and
    neither ``width`` nor the ``COLUMNS`` environment variable sets its width."""
    console = Console(**kwargs)
    if kwargs.get("width") is None and not is_live(console) and not os.environ.get("COLUMNS", "").isdigit():
        console.width = WIDE
    return console


def print_rule(console: Console, title: str) -> None:
    """``console.rule(title)``, at most 100 columns wide when the console is not a terminal."""
    if is_live(console):
        console.rule(title)
    else:
        console.print(Rule(title), width=min(console.width, 100))


__all__ = ["WIDE", "is_live", "make_console", "print_rule"]
