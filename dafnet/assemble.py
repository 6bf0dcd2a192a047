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


def build_method(recipe: Recipe, facts: Facts):
    """The recipe's method, which builds its own components from ``recipe.model``."""
    return build("method", recipe.method.name, recipe.method.params, facts, "method", recipe=recipe)


def assemble(recipe: Recipe):
    """(data source, facts, method) for a resolved recipe."""
    source, facts = build_data_source(recipe)
    return source, facts, build_method(recipe, facts)
