"""``dafnet recipes list|cp``: the recipes shipped with dafnet."""

from __future__ import annotations

from pathlib import Path

import typer

from dafnet.cli.output import console
from dafnet.errors import DafnetError

app = typer.Typer(help="Recipes shipped with dafnet.", no_args_is_help=True)


@app.command("list")
def list_recipes() -> None:
    """Built-in recipes with their descriptions."""
    import yaml
    from rich.table import Table

    from dafnet.config.recipes import builtin_recipes

    table = Table(title="built-in recipes", title_justify="left")
    table.add_column("name", style="cyan")
    table.add_column("kind")
    table.add_column("description", overflow="fold")
    for name, path in builtin_recipes().items():
        data = yaml.safe_load(path.read_text()) or {}
        kind = "experiment spec" if "methods" in data else "recipe"
        table.add_row(name, kind, str(data.get("description", "")).strip())
    console.print(table)


@app.command("cp")
def copy_recipe(
    name: str = typer.Argument(..., help="Built-in recipe name, e.g. quickstart."),
    dest: Path = typer.Argument(..., help="Destination file or folder."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Copy a built-in recipe to edit it; a ``base:`` it names is copied too."""
    import yaml

    from dafnet.config.recipes import builtin_recipes

    known = builtin_recipes()
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem not in known:
        raise DafnetError(f"no built-in recipe {name!r}", hint=f"built-in recipes: {', '.join(known)}")
    src = known[stem]
    folder = dest.is_dir() or str(dest).endswith(("/", "\\")) or not dest.suffix  # "newdir/" or "newdir"
    target = dest / src.name if folder else dest
    todo = [(src, target)]
    base = (yaml.safe_load(src.read_text()) or {}).get("base")
    while isinstance(base, str):
        base_src = (todo[-1][0].parent / base).resolve()
        todo.append((base_src, todo[-1][1].parent / base))
        base = (yaml.safe_load(base_src.read_text()) or {}).get("base")
    for _, t in todo:
        if t.exists() and not force:
            raise DafnetError(f"{t} exists", hint="pass --force to overwrite, or choose another destination")
    for s, t in todo:
        try:
            t.parent.mkdir(parents=True, exist_ok=True)
            tmp = t.with_name(f".{t.name}.tmp")
            tmp.write_text(s.read_text())
            tmp.replace(t)
        except OSError as exc:
            raise DafnetError(f"cannot write {t}: {exc.strerror}", hint="choose a writable destination") from exc
        console.print(f"copied {s.name} -> {t}")
