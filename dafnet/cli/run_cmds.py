"""``dafnet train|validate|summary|evaluate``: the commands that take a recipe or a run."""

from __future__ import annotations

from pathlib import Path

import typer

from dafnet.cli.output import console, recipe_yaml

_OVERRIDES_HELP = "Dotted overrides, e.g. train.epochs=3 model.decoder=spade."


def _load(recipe: str, overrides: list[str] | None):
    from dafnet.config import find_recipe, load_recipe

    return load_recipe(find_recipe(recipe), overrides or [])


def train(
    recipe: str | None = typer.Argument(None, help="Recipe YAML or built-in recipe name."),
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP, show_default=False),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Where the run is written."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this folder exactly."),
) -> None:
    """Train a model from a recipe (or resume a run)."""
    from dafnet.errors import DafnetError

    if resume is not None:
        from dafnet.engine import resume_recipe

        overrides = ([recipe] if recipe is not None else []) + list(overrides or [])
        if any("=" not in item for item in overrides):
            raise DafnetError("--resume continues a run with its own recipe; only KEY=VALUE overrides may follow",
                              hint="e.g. dafnet train --resume RUN train.epochs=60 (epochs, patience, logging and "
                                   "the device may change), or start a new run without --resume")
        resolved = resume_recipe(resume, overrides)
    elif recipe is None:
        raise DafnetError("missing RECIPE", hint="dafnet train recipes/quickstart.yaml (or --resume RUN_DIR)")
    else:
        resolved = _load(recipe, overrides)
    from dafnet.engine import train as run_training

    run_training(resolved, run_dir=run_dir, resume=resume, console=console)


def validate(
    recipe: str = typer.Argument(..., help="Recipe YAML or built-in recipe name."),
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP, show_default=False),
) -> None:
    """Check a recipe; print it resolved (defaults filled in) or every problem at once.

    The method and its components are built as train builds them (on the CPU, without loading
    data, with one batch-1 forward of every role), so what train would refuse is reported here.
    """
    from rich.markup import escape
    from rich.syntax import Syntax

    from dafnet.assemble import check_build
    from dafnet.config import RecipeError

    resolved = _load(recipe, overrides)
    try:
        notes = check_build(resolved)
    except RecipeError as exc:
        raise exc.with_source(f"{recipe}: building its components") from None
    console.print(Syntax(recipe_yaml(resolved), "yaml", theme="ansi_dark", background_color="default", word_wrap=True))
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print("[green]recipe is valid[/]" + (" (its components build)" if not notes else ""))


def summary(
    recipe: str = typer.Argument(..., help="Recipe YAML or built-in recipe name."),
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP, show_default=False),
    num_classes: int | None = typer.Option(
        None, "--num-classes", min=1,
        help="Foreground classes L; lets a recipe whose data folder is not here be summarised."),
) -> None:
    """Per role: component, output shape and exact trainable parameters, without training."""
    from rich.table import Table

    from dafnet.assemble import build_data_source, build_method, facts_without_data
    from dafnet.errors import DafnetError

    resolved = _load(recipe, overrides)
    try:
        _, facts = build_data_source(resolved)
        if num_classes is not None:
            facts = facts_without_data(resolved, num_classes).with_(**{
                k: v for k, v in vars(facts).items() if k not in {"num_classes", "class_names"}})
    except DafnetError as exc:
        if num_classes is None:
            raise DafnetError(exc.message, hint=(exc.hint or "") +
                              "; or pass --num-classes L to summarise without the data") from exc
        facts = facts_without_data(resolved, num_classes)
    method = build_method(resolved, facts)
    rows = method.summary()
    size = "x".join(str(s) for s in facts.image_size)
    table = Table(title=f"{resolved.name}: method {resolved.method.name} at {size}", title_justify="left")
    table.add_column("role", style="cyan", no_wrap=True)
    table.add_column("component", no_wrap=True)
    table.add_column("output shape", no_wrap=True)
    table.add_column("parameters", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row.role, row.component, row.output_shape, f"{row.trainable_parameters:,}")
    table.add_section()
    table.add_row("total", "", "", f"{sum(r.trainable_parameters for r in rows):,}")
    console.print(table)


def register(app: typer.Typer) -> None:
    panel = "Run"
    app.command("train", rich_help_panel=panel)(train)
    app.command("validate", rich_help_panel=panel)(validate)
    app.command("summary", rich_help_panel=panel)(summary)
