"""From a resolved recipe to objects: the data source, the facts, the method (with its context)."""

from __future__ import annotations

from collections.abc import Iterable

from dafnet.builder import build, build_and_declare
from dafnet.config.schema import Recipe
from dafnet.errors import DafnetError
from dafnet.interfaces.facts import Facts
from dafnet.interfaces.method import ComponentChoice, MethodContext


def build_data_source(recipe: Recipe):
    """The recipe's data source and the facts it declares (restricted to the recipe's modalities)."""
    source, facts = build_and_declare("data_source", recipe.data.source.name, recipe.data.source.build_params,
                                      Facts(), "data.source")
    if recipe.data.modalities is not None:
        facts = facts.with_(modalities=tuple(recipe.data.modalities))
    return source, facts


def facts_without_data(recipe: Recipe, num_classes: int | None = None) -> Facts:
    """The facts a recipe states without opening its data (for ``dafnet summary``)."""
    from dafnet.builder import component_class, validate_params

    cls = component_class("data_source", recipe.data.source.name, "data.source.name")
    params = validate_params(cls, recipe.data.source.build_params, "data.source.params")
    facts = Facts(**cls.facts_without_data(params))
    if recipe.data.modalities is not None:
        facts = facts.with_(modalities=tuple(recipe.data.modalities))
    if num_classes is not None:
        facts = facts.with_(num_classes=num_classes, class_names=tuple(f"class_{i}" for i in range(1, num_classes + 1)))
    return facts


def _choice(spec) -> ComponentChoice:
    """A role's component for the method, with the params phase two validated (built as they are)."""
    validated = spec.build_params
    return ComponentChoice(spec.name, dict(spec.params), validated if validated is not spec.params else None)


def method_context(recipe: Recipe, slices_device: str | None = None) -> MethodContext:
    """What the recipe's method reads of it (a method never sees the recipe itself); ``slices_device``:
    the training device when the engine trains with ``data.slices_on_device``."""
    data = recipe.data
    return MethodContext(
        method=recipe.method.name,
        target=data.target,
        components={role: _choice(spec) for role, spec in recipe.model.items()},
        loss_weights=dict(recipe.losses),
        annotation_fraction=data.annotation_fraction,
        annotation_seed=data.annotation_seed,
        rotation_degrees=data.augment.rotation_degrees,
        misalignment_degrees=data.augment.misalignment_degrees,
        misalignment_shift=data.augment.misalignment_shift,
        augment_warp=data.augment.warp,
        slices_device=slices_device,
        seed=recipe.train.seed,
    )


def build_method(recipe: Recipe, facts: Facts, slices_device: str | None = None):
    """The recipe's method, built with its :func:`method_context`; it builds its own components from
    the context's ``components``."""
    return build("method", recipe.method.name, recipe.method.build_params, facts, "method",
                 context=method_context(recipe, slices_device))


def assemble(recipe: Recipe):
    """(data source, facts, method) for a resolved recipe."""
    source, facts = build_data_source(recipe)
    return source, facts, build_method(recipe, facts)


def check_lr_scale(roles: Iterable[str], scale: dict[str, float]) -> None:
    """``train.lr_scale`` names only networks (roles) of the method: checked by ``dafnet train`` (building the
    optimizers) and ``dafnet validate``."""
    roles = list(roles)
    unknown = sorted(set(scale) - set(roles))
    if unknown:
        error = DafnetError(f"train.lr_scale names {unknown}, which are not networks of this method",
                            hint=f"the method's networks: {', '.join(roles)}")
        error.key = "train.lr_scale"
        raise error


def check_build(recipe: Recipe) -> list[str]:
    """Build what ``dafnet train`` builds before it trains, on the CPU and without loading data: the
    data source (for its facts), the method with every component, and one batch-1 forward of every
    role (``method.summary()``). Returns notes on what could not be checked here; what train would
    refuse is a :class:`RecipeError` at the recipe key whose component failed."""
    from dafnet.config.errors import RecipeError, RecipeIssue
    from dafnet.interfaces.facts import MissingFactError

    notes = []
    try:
        _, facts = build_data_source(recipe)
    except DafnetError as exc:
        facts = facts_without_data(recipe)
        notes.append(f"the data source could not be opened here ({exc.message}): the components were built "
                     "from the facts the recipe states")
        if facts.num_classes is None:
            facts = facts_without_data(recipe, 1)
            notes.append("the number of classes comes from the data, so the segmentation heads were built "
                         "for 1 class")
    try:
        method = build_method(recipe, facts)
        method.summary()
        check_lr_scale(method.networks(), recipe.train.lr_scale)
    except DafnetError as exc:
        if notes and isinstance(exc.__cause__, MissingFactError):
            return [*notes, f"the components could not be built without the data: {exc.message}"]
        if isinstance(exc, RecipeError):
            raise
        raise RecipeError([RecipeIssue(exc.key or "method", exc.message, exc.hint)]) from exc
    return notes
