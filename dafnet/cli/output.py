"""Rendering for the CLI: one console, errors as messages (exit 2), recipes as YAML."""

from __future__ import annotations

import sys

from rich.table import Table

from dafnet.console import make_console

console = make_console()
"""stdout; as wide as the terminal, or wide enough for any table when not a terminal (dafnet/console.py)."""
err_console = make_console(stderr=True)

EXIT_USER_ERROR = 2


def print_error(exc: BaseException) -> None:
    """A user-caused error: what is wrong, where, and what to do; no traceback."""
    from dafnet.config.errors import RecipeError

    if isinstance(exc, RecipeError):
        where = f" in {exc.source}" if exc.source else ""
        table = Table(title=f"{len(exc.issues)} problem(s){where}", title_justify="left",
                      show_lines=False, header_style="bold red")
        table.add_column("key", style="cyan", overflow="fold")
        table.add_column("problem", overflow="fold")
        table.add_column("hint", style="dim", overflow="fold")
        for issue in exc.issues:
            table.add_row(issue.path, issue.message, issue.hint or "")
        err_console.print(table)
        return
    message = getattr(exc, "message", None) or str(exc)
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    hint = getattr(exc, "hint", None)
    if hint:
        err_console.print(f"[dim]hint: {hint}[/]", highlight=False)


def recipe_yaml(recipe) -> str:
    import yaml

    data = recipe.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=1000)


def flags_without_type() -> None:
    """Show flags as flags in ``--help``: typer's rich help prints a type beside every option,
    ``--dry-run <bool>`` for a flag that takes no value; a flag (or a counter) without an explicit
    metavar now shows none, as typer's plain help and click do. Patches typer's option class once."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_dafnet_flags", False):
        return

    def display_type_rich(self, ctx):
        if (getattr(self, "is_flag", False) or getattr(self, "count", False)) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._dafnet_flags = True
    TyperOption.display_type_rich = display_type_rich


def is_tty() -> bool:
    return sys.stdout.isatty()
