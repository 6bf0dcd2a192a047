"""The ``dafnet`` command line (typer + rich). Heavy imports happen inside commands."""

from dafnet.cli.app import app, main

__all__ = ["app", "main"]
