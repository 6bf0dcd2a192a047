"""``dafnet plugins list|info``: what components are installed, and their parameters."""

from __future__ import annotations

import typer

from dafnet.cli.output import console

app = typer.Typer(help="Registered components (built-in and from installed plugins).",
                  no_args_is_help=True)


@app.command("list")
def list_plugins(
    kind: str | None = typer.Option(None, "--kind", "-k", help="Only this kind, e.g. decoder."),
    targets: bool = typer.Option(False, "--targets", help="Also show each entry's module:Class."),
) -> None:
    """Every registered component by kind, with its origin."""
    from rich.markup import escape
    from rich.table import Table

    from dafnet.registry import KINDS, RegistryError, autoload_enabled, registry

    if kind is not None and kind not in KINDS:
        raise RegistryError(f"unknown kind {kind!r}", hint=f"kinds: {', '.join(KINDS)}")
    contested: list[str] = []
    table = Table(title="dafnet components", title_justify="left")
    table.add_column("kind", style="bold")
    table.add_column("name", style="cyan")
    table.add_column("origin")
    if targets:
        table.add_column("target", style="dim", overflow="fold")
    for name, info in KINDS.items():
        if kind is not None and name != kind:
            continue
        reg = registry(name)
        entries = reg.entries()
        for i, entry in enumerate(entries):
            rivals = reg.conflict(entry.name)
            origin, target = entry.origin, entry.target
            if rivals:
                contested.append(f"{info.title} {entry.name!r}")
                origin = "[red]contested:[/] " + escape(" | ".join(e.origin for e in rivals))
                target = " | ".join(e.target for e in rivals)
            row = [info.title if i == 0 else "", entry.name, origin]
            table.add_row(*row, *([target] if targets else []))
        if not entries:
            table.add_row(info.title, "[dim](none)[/]", "", *([""] if targets else []))
        table.add_section()
    console.print(table)
    if contested:
        console.print(f"[red]contested names (recipes cannot use them until one claim is removed):[/] "
                      f"{', '.join(contested)}: uninstall one of the distributions or rename its entry point")
    if not autoload_enabled():
        console.print("[yellow]plugin discovery is off (DAFNET_DISABLE_PLUGIN_AUTOLOAD=1): "
                      "built-ins only[/]")


def _describe_field(field) -> tuple[str, str, str]:
    from pydantic_core import PydanticUndefined
    from rich.markup import escape

    from dafnet.config.reference import type_label

    annotation = type_label(field.annotation)
    if field.default is not PydanticUndefined:
        default = escape(repr(field.default))
    elif field.default_factory is not None:
        default = escape(repr(field.default_factory()))
    else:
        default = "[red]required[/]"
    from dafnet.config.reference import describe_limits

    limits = describe_limits(field)
    return escape(annotation + (f" ({limits})" if limits else "")), default, escape(field.description or "")


@app.command("info")
def info(
    name: str = typer.Argument(..., help="Component name, e.g. film."),
    kind: str | None = typer.Option(None, "--kind", "-k", help="Disambiguate a name used by several kinds."),
) -> None:
    """A component's origin, description and parameters (from its Params model)."""
    import inspect

    from rich.markup import escape
    from rich.table import Table

    from dafnet.registry import KINDS, RegistryError, all_registries, find_kind, registry

    if kind is not None:
        entries = [registry(kind).entry(name)]
    else:
        entries = find_kind(name)
        if not entries:
            import difflib

            every = sorted({n for reg in all_registries().values() for n in reg.names()})
            close = difflib.get_close_matches(name, every, n=3, cutoff=0.5)
            raise RegistryError(
                f"no component named {name!r}" + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""),
                hint="`dafnet plugins list` shows every registered component",
            )
    for entry in entries:
        cls = entry.load()
        console.print(f"[bold cyan]{entry.name}[/]  ({KINDS[entry.kind].title}, {entry.origin})")
        console.print(f"[dim]{escape(entry.target)}[/]")
        doc = inspect.getdoc(cls)
        if doc:
            console.print(escape(doc.split("\n\n")[0]))
        table = Table(title="params", title_justify="left")
        for col in ("key", "type", "default", "description"):
            table.add_column(col, overflow="fold")
        fields = cls.Params.model_fields
        for key, field in fields.items():
            table.add_row(key, *_describe_field(field))
        if fields:
            console.print(table)
        else:
            console.print("[dim]no parameters[/]")
        console.print()
