"""Turning a component spec (name + params) into an object, with recipe-path errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from dafnet.config.errors import RecipeError, RecipeIssue, issues_from_validation
from dafnet.interfaces.facts import Facts
from dafnet.registry import RegistryError, registry


def component_class(kind: str, name: str, path: str) -> type:
    """The class for ``name`` in ``kind``; a :class:`RecipeError` at ``path`` otherwise."""
    try:
        return registry(kind).get(name)
    except RegistryError as exc:
        raise RecipeError([RecipeIssue(path, exc.message, exc.hint)]) from exc


def validate_params(cls: type, params: dict[str, Any] | BaseModel, path: str) -> BaseModel:
    """``cls.Params`` validated from a mapping; errors carry ``path`` + the field's path."""
    if isinstance(params, cls.Params):
        return params
    if isinstance(params, BaseModel):
        params = params.model_dump()
    try:
        return cls.Params.model_validate(params or {})
    except ValidationError as exc:
        raise RecipeError(issues_from_validation(exc, prefix=path)) from exc


def build(kind: str, name: str, params: dict[str, Any] | BaseModel, facts: Facts,
          path: str | None = None, **extra: Any):
    """Build the component ``name`` of ``kind`` as ``Cls(Params(**params), facts, **extra)``."""
    path = path or kind
    cls = component_class(kind, name, path + ".name")
    validated = validate_params(cls, params, path + ".params")
    return cls(validated, facts, **extra)


def build_and_declare(kind: str, name: str, params, facts: Facts, path: str | None = None,
                      **extra: Any):
    """Build a component and return it with ``facts`` extended by what it declares."""
    component = build(kind, name, params, facts, path, **extra)
    return component, facts.with_(**component.declared_facts())
