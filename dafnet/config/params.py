"""A component's params checked against its own ``Params`` model, with recipe-path errors.

Phase two of recipe validation (:mod:`dafnet.config.resolve`) and the builder
(:mod:`dafnet.builder`) both use it; it needs nothing but the class.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from dafnet.config.errors import RecipeError, RecipeIssue, issues_from_validation


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
