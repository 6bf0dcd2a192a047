"""Finding a recipe: a YAML path, or the name of a recipe shipped with dafnet (``quickstart``)."""

from __future__ import annotations

from pathlib import Path

from dafnet.errors import DafnetError


def builtin_recipes() -> dict[str, Path]:
    """Name (file stem, with sub-folder) -> path of every packaged recipe."""
    from importlib import resources

    root = Path(str(resources.files("dafnet.recipes")))
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))}


def find_recipe(arg: str) -> Path:
    """A recipe path, or the name of a built-in recipe (``quickstart``)."""
    path = Path(arg).expanduser()
    if path.exists():
        return path
    known = builtin_recipes()
    stem = arg[:-5] if arg.endswith(".yaml") else arg
    if stem in known:
        return known[stem]
    if "/" not in arg and Path(arg).name in {p.name for p in known.values()}:
        return next(p for p in known.values() if p.name == Path(arg).name)
    raise DafnetError(f"recipe not found: {arg}",
                      hint=f"give a YAML path or a built-in recipe: {', '.join(known)}")
