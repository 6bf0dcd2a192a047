"""Phase two of recipe validation: every named component against its own ``Params``.

:func:`load_recipe` is the one entry point: YAML + ``base:`` + overrides, the skeleton
schema, then each component resolved in the registry with its params validated and its
defaults filled in. All problems are collected and raised together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dafnet.config.errors import RecipeError, RecipeIssue, did_you_mean, issues_from_validation
from dafnet.config.loading import apply_overrides, attribute_overrides, load_recipe_dict, source_with_overrides
from dafnet.config.params import validate_params
from dafnet.config.schema import ComponentSpec, Recipe
from dafnet.registry import RegistryError, registry


def _resolve_component(kind: str, spec: ComponentSpec, path: str,
                       issues: list[RecipeIssue]) -> tuple[type | None, ComponentSpec]:
    try:
        cls = registry(kind).get(spec.name)
    except RegistryError as exc:
        issues.append(RecipeIssue(f"{path}.name" if path else "name", exc.message, exc.hint))
        return None, spec
    try:
        params = validate_params(cls, spec.params, f"{path}.params", spec.name)
    except RecipeError as exc:
        issues.extend(exc.issues)
        return cls, spec
    return cls, ComponentSpec.validated(spec.name, params)


def _available_modalities(source_cls, spec: ComponentSpec, issues: list[RecipeIssue],
                          required: bool) -> list[str] | None:
    """The modalities a data source offers. When the recipe lists its modalities itself, a source
    that cannot answer yet (e.g. its data folder is not there on this machine) is not an error:
    the recipe still validates and training reports the missing data."""
    from dafnet.errors import DafnetError
    from dafnet.interfaces.facts import Facts

    try:
        source = source_cls(spec.build_params, Facts())
        return list(source.modalities)
    except DafnetError as exc:
        if required:
            issues.append(RecipeIssue("data.source", exc.message,
                                      exc.hint or "or list data.modalities in the recipe"))
        return None


def resolve(recipe: Recipe) -> Recipe:
    """A copy of ``recipe`` with every component checked and every default filled in.

    This is where a component's params are validated, once: each resolved spec keeps its
    ``Params`` object (:attr:`ComponentSpec.build_params`), which the builder takes as it is."""
    issues: list[RecipeIssue] = []
    data = recipe.data

    source_cls, source_spec = _resolve_component("data_source", data.source, "data.source", issues)
    modalities, target = data.modalities, data.target
    if source_cls is not None and not issues:
        available = _available_modalities(source_cls, source_spec, issues, required=modalities is None)
        if available is not None:
            if modalities is None:
                modalities = available
            missing = [m for m in modalities if m not in available]
            if missing:
                issues.append(RecipeIssue("data.modalities", f"{missing} not provided by data source "
                                          f"{data.source.name!r}", f"it provides {available}"))
            if len(modalities) < 2:
                issues.append(RecipeIssue("data.modalities", "need at least two modalities",
                                          f"the source provides {available}"))
        if target is None and modalities:
            target = modalities[-1]
        elif target is not None and modalities and target not in modalities:
            issues.append(RecipeIssue("data.target", f"{target!r} is not one of {modalities}"))

    method_cls, method_spec = _resolve_component("method", recipe.method, "method", issues)
    model: dict[str, ComponentSpec] = {}
    losses = dict(recipe.losses)
    if method_cls is not None:
        roles = method_cls.roles
        for role in recipe.model:
            if role not in roles:
                issues.append(RecipeIssue(f"model.{role}", f"unknown role for method {recipe.method.name!r}"
                                          + did_you_mean(role, list(roles), "model"),
                                          f"roles are: {', '.join(roles)}"))
        for role, spec in roles.items():
            given = recipe.model.get(role, ComponentSpec(name=spec.default))
            _, model[role] = _resolve_component(spec.kind, given, f"model.{role}", issues)
        defaults = method_cls.loss_weights
        for term in recipe.losses:
            if term not in defaults:
                issues.append(RecipeIssue(f"losses.{term}", f"unknown loss term for method {recipe.method.name!r}"
                                          + did_you_mean(term, list(defaults), "losses"),
                                          f"terms are: {', '.join(defaults)}"))
        losses = {term: float(recipe.losses.get(term, weight)) for term, weight in defaults.items()}

    if issues:
        raise RecipeError(issues)
    new_data = data.model_copy(update={"source": source_spec, "modalities": modalities, "target": target})
    return recipe.model_copy(update={"data": new_data, "method": method_spec, "model": model,
                                     "losses": losses})


def _spec(raw: Any) -> ComponentSpec | None:
    try:
        return ComponentSpec.model_validate(raw)
    except ValidationError:
        return None


def _component_issues(data: dict[str, Any]) -> list[RecipeIssue]:
    """Phase-two problems of the parts of a recipe whose skeleton is sound (so that a recipe
    with skeleton errors still gets every component error reported in the same run)."""
    issues: list[RecipeIssue] = []
    raw_data = data.get("data")
    if isinstance(raw_data, dict) and (spec := _spec(raw_data.get("source"))) is not None:
        _resolve_component("data_source", spec, "data.source", issues)
    method = _spec(data.get("method", "dafnet"))
    if method is None:
        return issues
    method_cls, _ = _resolve_component("method", method, "method", issues)
    model = data.get("model")
    if method_cls is None or not isinstance(model, dict):
        return issues
    for role, raw in model.items():
        if role in method_cls.roles and (spec := _spec(raw)) is not None:
            _resolve_component(method_cls.roles[role].kind, spec, f"model.{role}", issues)
    return issues


def parse_recipe(data: dict[str, Any]) -> Recipe:
    """Phase one: the skeleton schema (plus the component problems it can already see)."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        issues = issues_from_validation(exc, model=Recipe)
        seen = {i.path for i in issues}
        issues += [i for i in _component_issues(data) if i.path not in seen]
        raise RecipeError(issues) from exc


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, merge, override, validate and resolve a recipe file. Raises :class:`RecipeError`."""
    try:
        data = load_recipe_dict(path)
        if "methods" in data and "method" not in data and "data" not in data:
            raise RecipeError([RecipeIssue("<recipe>", "this is an experiment spec (a grid of methods), not a recipe",
                                           f"run it with: dafnet experiment {path}")])
        data = apply_overrides(data, list(overrides))
        return resolve(parse_recipe(data))
    except RecipeError as exc:
        issues = attribute_overrides(exc.issues, overrides)
        raise RecipeError(issues, source_with_overrides(str(path), issues)) from None
