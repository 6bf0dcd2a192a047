"""From a resolved recipe to objects: the data source, the facts, the method (with its context)."""

from __future__ import annotations

from dafnet.builder import build, build_and_declare
from dafnet.config.schema import Recipe
from dafnet.interfaces.facts import Facts
from dafnet.interfaces.method import ComponentChoice, MethodContext


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


def method_context(recipe: Recipe) -> MethodContext:
    """What the recipe's method reads of it (a method never sees the recipe itself)."""
    data = recipe.data
    return MethodContext(
        method=recipe.method.name,
        target=data.target,
        components={role: ComponentChoice(spec.name, dict(spec.params)) for role, spec in recipe.model.items()},
        loss_weights=dict(recipe.losses),
        annotation_fraction=data.annotation_fraction,
        annotation_seed=data.annotation_seed,
        rotation_degrees=data.augment.rotation_degrees,
        misalignment_degrees=data.augment.misalignment_degrees,
        misalignment_shift=data.augment.misalignment_shift,
        seed=recipe.train.seed,
    )


def build_method(recipe: Recipe, facts: Facts):
    """The recipe's method, built with its :func:`method_context`; it builds its own components from
    the context's ``components``."""
    return build("method", recipe.method.name, recipe.method.params, facts, "method",
                 context=method_context(recipe))


def assemble(recipe: Recipe):
    """(data source, facts, method) for a resolved recipe."""
    source, facts = build_data_source(recipe)
    return source, facts, build_method(recipe, facts)
