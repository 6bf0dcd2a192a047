"""Turning a component spec (name + params) into an object, with recipe-path errors."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from dafnet.config.errors import RecipeError, RecipeIssue, issues_from_validation
from dafnet.errors import DafnetError
from dafnet.interfaces.facts import Facts, MissingFactError
from dafnet.registry import KINDS, RegistryError, registry


def component_class(kind: str, name: str, path: str) -> type:
    """The class for ``name`` in ``kind``; a :class:`RecipeError` at ``path`` otherwise."""
    try:
        return registry(kind).get(name)
    except RegistryError as exc:
        raise RecipeError([RecipeIssue(path, exc.message, exc.hint)]) from exc


def _unknown_keys(cls: type, params: dict[str, Any], path: str, name: str | None) -> list[RecipeIssue]:
    """Keys ``cls.Params`` does not have. Checked here too, so a plugin whose ``Params`` is a plain
    pydantic model (which ignores extra keys) still gets its typos reported."""
    if cls.Params.model_config.get("extra") == "allow":
        return []
    fields = cls.Params.model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    issues = []
    for key in params:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), sorted(fields), n=1)
        message = "unknown parameter" + (f"; did you mean {close[0]!r}?" if close else "")
        where = f"`dafnet plugins info {name}`" if name else f"{cls.__qualname__}.Params"
        issues.append(RecipeIssue(f"{path}.{key}", message,
                                  f"{where} lists its parameters: {', '.join(fields) or '(none)'}"))
    return issues


def validate_params(cls: type, params: dict[str, Any] | BaseModel, path: str, name: str | None = None) -> BaseModel:
    """``cls.Params`` validated from a mapping; errors carry ``path`` + the field's path."""
    if isinstance(params, cls.Params):
        return params
    if isinstance(params, BaseModel):
        params = params.model_dump()
    params = params or {}
    unknown = _unknown_keys(cls, params, path, name)
    bad = {issue.path.rsplit(".", 1)[-1] for issue in unknown}
    try:
        validated = cls.Params.model_validate({k: v for k, v in params.items() if k not in bad})
    except ValidationError as exc:
        raise RecipeError(unknown + issues_from_validation(exc, prefix=path)) from exc
    if unknown:
        raise RecipeError(unknown)
    return validated


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
        raise DafnetError(f"{_origin(kind, name)}, chosen at {path}: {exc.message}", exc.hint) from exc
    except DafnetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure is the component's, reported as such
        raise DafnetError(
            f"{_origin(kind, name)}, chosen at {path}, failed to build: {type(exc).__name__}: {exc}",
            hint=f"components are built as {cls.__qualname__}(params, facts); docs/plugins.md shows the "
                 f"{KINDS[kind].title} contract, and dafnet.testing.check_component checks one alone",
        ) from exc


def build_and_declare(kind: str, name: str, params, facts: Facts, path: str | None = None,
                      **extra: Any):
    """Build a component and return it with ``facts`` extended by what it declares."""
    component = build(kind, name, params, facts, path, **extra)
    return component, facts.with_(**component.declared_facts())
