"""From a resolved recipe to objects: the data source, the facts, the method."""

from __future__ import annotations

from dafnet.builder import build, build_and_declare
from dafnet.config.schema import Recipe
from dafnet.interfaces.facts import Facts


def build_data_source(recipe: Recipe):
    """The recipe's data source and the facts it declares (restricted to the recipe's modalities)."""
    source, facts = build_and_declare("data_source", recipe.data.source.name, recipe.data.source.params,
                                      Facts(), "data.source")
    if recipe.data.modalities is not None:
        facts = facts.with_(modalities=tuple(recipe.data.modalities))
    return source, facts


def facts_without_data(recipe: Recipe, num_classes: int | None = None) -> Facts:
    """The facts a recipe states without opening its data (for ``dafnet summary``)."""
    from dafnet.builder import component_class, validate_params

    cls = component_class("data_source", recipe.data.source.name, "data.source.name")
    params = validate_params(cls, recipe.data.source.params, "data.source.params")
    facts = Facts(**cls.facts_without_data(params))
    if recipe.data.modalities is not None:
        facts = facts.with_(modalities=tuple(recipe.data.modalities))
    if num_classes is not None:
        facts = facts.with_(num_classes=num_classes, class_names=tuple(f"class_{i}" for i in range(1, num_classes + 1)))
    return facts


def build_method(recipe: Recipe, facts: Facts):
    """The recipe's method, which builds its own components from ``recipe.model``."""
    return build("method", recipe.method.name, recipe.method.params, facts, "method", recipe=recipe)


def assemble(recipe: Recipe):
    """(data source, facts, method) for a resolved recipe."""
    source, facts = build_data_source(recipe)
    return source, facts, build_method(recipe, facts)
