"""The root command: global options, error handling, sub-command registration."""

from __future__ import annotations

import os

import typer

from dafnet import __version__
from dafnet.cli import (
    data_cmds,
    evaluate_cmds,
    evaluate_folder_cmds,
    experiment_cmds,
    plugin_cmds,
    predict_cmds,
    recipe_cmds,
    run_cmds,
)
from dafnet.cli.output import EXIT_USER_ERROR, console, flags_without_type, print_error

flags_without_type()
app = typer.Typer(
    name="dafnet",
    help="Multimodal, semi-supervised segmentation with disentangled representations (DAFNet).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

_DEBUG_ENV = "DAFNET_DEBUG"  # set to 1 to always show tracebacks


def _version(value: bool) -> None:
    if value:
        console.print(f"dafnet {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool | None = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """dafnet: train, evaluate and inspect DAFNet models from recipes."""
    # --debug is read by main() before the command runs; it is declared here for --help.


run_cmds.register(app)
predict_cmds.register(app)
evaluate_cmds.register(app)
evaluate_folder_cmds.register(app)
experiment_cmds.register(app)
app.add_typer(plugin_cmds.app, name="plugins", rich_help_panel="Components and recipes")
app.add_typer(recipe_cmds.app, name="recipes", rich_help_panel="Components and recipes")
app.add_typer(data_cmds.app, name="data", rich_help_panel="Data")


def _plain_warnings() -> None:
    """Warnings (a data source's about an odd file, say) print as one ``warning:`` line, not as a
    Python source line; ``--debug`` keeps Python's format."""
    import warnings

    from rich.markup import escape

    def show(message, category, filename, lineno, file=None, line=None):  # warnings.showwarning's signature
        console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print a message and exit 2 (``--debug`` shows the traceback)."""
    import sys

    from dafnet.errors import DafnetError

    args = sys.argv[1:] if argv is None else argv
    # OpenMP threads that sleep instead of spinning while they wait: on a shared or busy CPU,
    # spinning threads slow every torch op down several times (see benchmarks/README.md).
    # Must be set before torch loads its OpenMP runtime; a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not ("--debug" in args or os.environ.get(_DEBUG_ENV)):
        _plain_warnings()
    try:
        app(args=args, prog_name="dafnet")
    except DafnetError as exc:
        if "--debug" in args or os.environ.get(_DEBUG_ENV):
            raise
        print_error(exc)
        raise SystemExit(EXIT_USER_ERROR) from None
