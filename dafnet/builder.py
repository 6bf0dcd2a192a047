"""Turning a component spec (name + params) into an object, with recipe-path errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dafnet.config.errors import RecipeError, RecipeIssue
from dafnet.config.params import validate_params
from dafnet.errors import DafnetError
from dafnet.interfaces.facts import Facts, MissingFactError
from dafnet.registry import KINDS, RegistryError, registry

__all__ = ["build", "build_and_declare", "component_class", "validate_params"]


def component_class(kind: str, name: str, path: str) -> type:
    """The class for ``name`` in ``kind``; a :class:`RecipeError` at ``path`` otherwise."""
    try:
        return registry(kind).get(name)
    except RegistryError as exc:
        raise RecipeError([RecipeIssue(path, exc.message, exc.hint)]) from exc


def _origin(kind: str, name: str) -> str:
    try:
        entry = registry(kind).entry(name)
    except RegistryError:
        return name
    return f"{KINDS[kind].title} {name!r} ({entry.origin})"


def build(kind: str, name: str, params: dict[str, Any] | BaseModel, facts: Facts,
          path: str | None = None, **extra: Any):
    """Build the component ``name`` of ``kind`` as ``Cls(Params(**params), facts, **extra)``.

    A constructor that fails with anything but a :class:`DafnetError` (a plugin's bug, most
    often) is reported as that component's failure, with the recipe key that chose it.
    """
    path = path or kind
    cls = component_class(kind, name, path + ".name")
    validated = validate_params(cls, params, path + ".params", name)
    try:
        return cls(validated, facts, **extra)
    except MissingFactError as exc:
        raise _at(DafnetError(f"{_origin(kind, name)}, chosen at {path}: {exc.message}", exc.hint), path) from exc
    except DafnetError as exc:
        _at(exc, path)
        raise
    except Exception as exc:  # any other failure is the component's, reported as such
        raise _at(DafnetError(
            f"{_origin(kind, name)}, chosen at {path}, failed to build: {type(exc).__name__}: {exc}",
            hint=f"components are built as {cls.__qualname__}(params, facts); docs/plugins.md shows the "
                 f"{KINDS[kind].title} contract, and dafnet.testing.check_component checks one alone",
        ), path) from exc


def _at(exc: DafnetError, path: str) -> DafnetError:
    """``exc`` with the recipe key of the component that failed (the innermost one keeps it)."""
    if exc.key is None and not isinstance(exc, RecipeError):
        exc.key = path
    return exc


def build_and_declare(kind: str, name: str, params, facts: Facts, path: str | None = None,
                      **extra: Any):
    """Build a component and return it with ``facts`` extended by what it declares."""
    component = build(kind, name, params, facts, path, **extra)
    return component, facts.with_(**component.declared_facts())
