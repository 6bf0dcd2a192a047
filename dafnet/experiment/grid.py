"""The cells of an experiment: one resolved recipe per method x pairing x fraction x fold x ablation
(x seed, when the spec or the method lists seeds).

Training-free methods (``copy``, ``register``: no phases) do not depend on the annotation
fraction, so they get one cell per fold and pairing (``fraction`` None), used in every column.
A pairing a method cannot express (e.g. ``automated`` for a method without candidates) is left out.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from dafnet.config.schema import Recipe
from dafnet.errors import DafnetError
from dafnet.experiment.spec import FULL, ExperimentSpec


@dataclass
class Cell:
    method: str
    """The spec's row label."""
    pairing: str
    fraction: float | None
    """None for training-free methods (all fractions)."""
    fold: int
    ablation: str
    overrides: list[str]
    recipe_path: Path
    recipe: Recipe | None = None
    trainable: bool = True
    predictions: list[str] = field(default_factory=list)
    seed: int | None = None
    """``train.seed`` of the cell; None: the recipe's own (and no ``__seed<k>`` in the id)."""
    evaluates: str | None = None
    """The id of the trained cell whose export this cell evaluates (a method with ``evaluate_from``)."""
    evaluation_overrides: list[str] = field(default_factory=list)
    """The overrides it evaluates that export with."""

    @property
    def id(self) -> str:
        fraction = "any" if self.fraction is None else f"{100 * self.fraction:g}"
        parts = [self.method, self.pairing, f"f{fraction}", f"fold{self.fold}", self.ablation]
        if self.seed is not None:
            parts.append(f"seed{self.seed}")
        return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-") or "x" for p in parts)


def method_class(recipe: Recipe):
    from dafnet.registry import registry

    return registry("method").get(recipe.method.name)


def is_trainable(cls) -> bool:
    """False for methods that declare no loss terms and no roles (the training-free baselines)."""
    return bool(cls.loss_weights) or bool(cls.roles)


def pairing_overrides(cls, pairing: str, candidates: int) -> list[str] | None:
    """Method overrides that express a pairing mode; None when the method cannot."""
    fields = cls.Params.model_fields
    has_pairing, has_k = "pairing" in fields, "num_candidates" in fields
    k1 = ["method.params.num_candidates=1"] if has_k else []
    if pairing == "expert":
        return (["method.params.pairing=expert"] if has_pairing else []) + k1
    if pairing == "random":
        return ["method.params.pairing=shuffled"] + k1 if has_pairing else None
    if has_pairing and has_k:  # automated: k shuffled candidates weighted by the pairing head
        return ["method.params.pairing=shuffled", f"method.params.num_candidates={candidates}"]
    return None


def _find_recipe(text: str, base: Path) -> Path:
    """A method's recipe: relative to the spec; else, for a copy of a shipped spec (``dafnet recipes
    cp experiments/...``), the same relative path from the shipped specs' folder; else a path
    from here or a built-in recipe name."""
    from importlib import resources

    path = Path(text).expanduser()
    if not path.is_absolute() and (base / path).exists():
        return base / path
    shipped = Path(str(resources.files("dafnet.recipes"))) / "experiments" / path
    if not path.is_absolute() and shipped.is_file():
        return shipped.resolve()
    from dafnet.config.recipes import find_recipe

    return find_recipe(text)


def reference_label(spec: ExperimentSpec, recipes: dict[str, Recipe]) -> str:
    if spec.reference is not None:
        return spec.reference
    return next((label for label, r in recipes.items() if r.method.name == "dafnet"), next(iter(spec.methods)))


def _check_predictions(label: str, given: list[str] | None, cls: type) -> None:
    """A spec's ``predictions`` must be types the method reports (when it declares them)."""
    known = tuple(getattr(cls, "prediction_types", ()))
    bad = [k for k in given or [] if known and k not in known]
    if bad:
        close = {k: difflib.get_close_matches(k, known, n=1) for k in bad}
        said = "; ".join(f"{k!r}" + (f" (did you mean {close[k][0]!r}?)" if close[k] else "") for k in bad)
        raise DafnetError(f"experiment: methods.{label}.predictions: {said} is not a prediction type of method "
                          f"{cls.__name__}", hint=f"its types: {', '.join(known)}")


def expand(spec: ExperimentSpec, base: Path) -> tuple[list[Cell], str]:
    """Every cell of the grid with its resolved recipe (all recipe problems raised together), and the
    reference method's label."""
    from dafnet.config.errors import RecipeError
    from dafnet.config.resolve import load_recipe

    paths, bases = _method_recipes(spec, base)
    reference = reference_label(spec, bases)
    cells: list[Cell] = []
    for label, entry in spec.methods.items():
        if entry.recipe is not None:
            cells += _method_cells(spec, label, entry, method_class(bases[label]), paths[label], label == reference)
    for label, entry in spec.methods.items():
        if entry.evaluate_from is not None:
            _check_predictions(label, entry.predictions, method_class(bases[entry.evaluate_from]))
    cells += _evaluation_cells(spec, cells)
    problems: list[str] = []
    for cell in cells:
        try:
            cell.recipe = load_recipe(cell.recipe_path, cell.overrides)
        except RecipeError as exc:
            problems.append(f"cell {cell.id}: {exc.message}")
    if problems:
        raise DafnetError("experiment: " + "\n".join(problems), hint="check the spec's overrides and ablations")
    problems = _weight_changing_overrides(cells)
    if problems:
        raise DafnetError("experiment: " + "\n".join(problems),
                          hint="an evaluate_from row may only change choices without weights (e.g. model.fuser.name)")
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise DafnetError("experiment: two cells map to the same folder", hint="use distinct method/ablation labels")
    return cells, reference


def _method_recipes(spec: ExperimentSpec, base: Path) -> tuple[dict[str, Path], dict[str, Recipe]]:
    """Per method with a recipe: its path and its recipe with the method's and the spec's overrides
    (every problem raised together)."""
    from dafnet.config.resolve import load_recipe

    bases: dict[str, Recipe] = {}
    paths: dict[str, Path] = {}
    problems: list[str] = []
    for label, entry in spec.methods.items():
        if entry.recipe is None:
            continue
        try:
            paths[label] = _find_recipe(entry.recipe, base)
            bases[label] = load_recipe(paths[label], entry.overrides + spec.overrides)
        except DafnetError as exc:
            problems.append(f"methods.{label}: {exc.message}")
    if problems:
        raise DafnetError("experiment: " + "\n".join(problems), hint="fix the recipes or overrides of these methods")
    return paths, bases


def _method_cells(spec: ExperimentSpec, label: str, entry, cls: type, recipe_path: Path,
                  is_reference: bool) -> list[Cell]:
    """The cells of one method: pairings x fractions x folds (its own, else the spec's) x ablations (the
    reference's) x seeds; a training-free method has no fractions or seeds."""
    _check_predictions(label, entry.predictions, cls)
    trainable = is_trainable(cls)
    fractions = spec.fractions if trainable else [None]
    seeds = (entry.seeds or spec.seeds or [None]) if trainable else [None]
    ablations = {FULL: [], **(spec.ablations if is_reference else {})}
    folds = entry.folds or spec.folds
    cells = []
    for pairing in spec.pairings:
        pair = pairing_overrides(cls, pairing, spec.candidates)
        if pair is None:
            continue
        for fraction, fold, (ablation, extra), seed in itertools.product(fractions, folds, ablations.items(),
                                                                           seeds):
            overrides = list(entry.overrides) + list(spec.overrides) + pair + [f"data.split.fold={fold}"]
            if fraction is not None:
                overrides.append(f"data.annotation_fraction={fraction}")
            if seed is not None:
                overrides.append(f"train.seed={seed}")
            overrides += list(extra)
            cells.append(Cell(label, pairing, fraction, fold, ablation, overrides, recipe_path, trainable=trainable,
                              predictions=list(entry.predictions or []), seed=seed))
    return cells


def _weight_shapes(recipe: Recipe) -> dict[str, tuple] | None:
    """Role -> parameter/buffer shapes of the recipe's method, built without its data (with a stand-in
    class count when the recipe does not state it); None when it cannot be built so."""
    from dafnet.assemble import build_data_source, build_method, facts_without_data

    try:
        try:
            _, facts = build_data_source(recipe)  # reads at most the dataset's description
        except DafnetError:
            facts = facts_without_data(recipe)
        if facts.num_classes is None:
            facts = facts.with_(num_classes=1, class_names=("class_1",))
        method = build_method(recipe, facts)
    except DafnetError:
        return None
    return {role: tuple((k, tuple(v.shape)) for k, v in net.state_dict().items())
            for role, net in method.networks().items()}


def _weight_changing_overrides(cells: list[Cell]) -> list[str]:
    """Problems of ``evaluate_from`` rows whose overrides change a network of the trained method
    (checked on one cell per row, before anything trains)."""
    by_id, checked, problems = {c.id: c for c in cells}, set(), []
    for cell in cells:
        if cell.evaluates is None or cell.method in checked:
            continue
        checked.add(cell.method)
        source = by_id[cell.evaluates]
        before, after = _weight_shapes(source.recipe), _weight_shapes(cell.recipe)
        if before is None or after is None:
            continue  # checked when the export is loaded
        changed = sorted(r for r in set(before) | set(after) if before.get(r) != after.get(r))
        if changed:
            problems.append(f"methods.{cell.method}.overrides {cell.evaluation_overrides} change the networks "
                            f"{changed} of {source.method}'s trained cells")
    return problems


def _evaluation_cells(spec: ExperimentSpec, cells: list[Cell]) -> list[Cell]:
    """One cell per un-ablated cell of the method each ``evaluate_from`` entry names. A trained
    source is evaluated from its export; a training-free one is simply built with the overrides."""
    out = []
    for label, entry in spec.methods.items():
        if entry.evaluate_from is None:
            continue
        for source in [c for c in cells if c.method == entry.evaluate_from and c.ablation == FULL]:
            out.append(Cell(label, source.pairing, source.fraction, source.fold, FULL,
                            source.overrides + list(entry.overrides), source.recipe_path,
                            trainable=source.trainable, predictions=list(entry.predictions or []),
                            seed=source.seed, evaluates=source.id if source.trainable else None,
                            evaluation_overrides=list(entry.overrides) if source.trainable else []))
    return out


__all__ = ["Cell", "expand", "is_trainable", "pairing_overrides", "reference_label"]
