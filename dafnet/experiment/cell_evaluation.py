"""Evaluating an experiment's cells: per_volume.json (the paper Dice of every test volume per
prediction type) of a trained cell's export, of a training-free method (with its run files), and of
an ``evaluate_from`` cell (a trained cell's export rebuilt with overrides). The test subjects are
loaded once per data source and process.

per_volume.json: ``evaluated_on`` (test, or validation when the split has no test subjects),
``dice`` (prediction type -> subject -> percent: the ``evaluation_step`` predictions and, for a
method with references, ``copy_<m>``, ``aligned_copy_<m>`` and ``aligned_copy``;
:mod:`dafnet.experiment.references`), ``alignment`` (column of ``dafnet evaluate --metric
alignment`` -> subject -> number, e.g. ``align_median_mm``; empty without the truth's
coordinates or references) and ``version`` (2). A file without ``version`` was written before the
references were recorded; :func:`cell_status` sends such a cell of a method with references back
to ``evaluate``, which re-evaluates its export (no training)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dafnet.errors import DafnetError
from dafnet.experiment.grid import Cell
from dafnet.experiment.references import reference_volumes

_SUBJECTS: dict[str, list] = {}
PER_VOLUME_VERSION = 2
"""per_volume.json's format: 2 records the references (``alignment`` and the aligned copies)."""


def per_volume_version(folder: Path) -> int:
    """The format of ``folder``'s per_volume.json: 1 without ``version``, 0 when it cannot be read."""
    try:
        record = json.loads((folder / "per_volume.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return 0
    return int(record.get("version", 1)) if isinstance(record, dict) and "dice" in record else 0


def cell_status(folder: Path, references: bool = False) -> str:
    """done / evaluate / failed / resume / new (:mod:`dafnet.experiment.runner`). ``references``:
    the cell's method reports references, so a per_volume.json without them needs evaluating again."""
    if (folder / "summary.json").is_file() and (folder / "per_volume.json").is_file():
        if references and per_volume_version(folder) < PER_VOLUME_VERSION:
            return "evaluate"
        return "done"
    if (folder / "summary.json").is_file():
        return "evaluate"
    if (folder / "failed.json").is_file():  # before state/: a run failed by a health check keeps its state
        return "failed"
    if (folder / "state").is_dir():
        return "resume"
    return "new"


def recipe_subjects(recipe, export: Path | None = None) -> tuple[list, dict | None]:
    """The recipe's subjects (loaded once per data settings and planned spacing) and its plans
    record: an export's stored spacing, else the one planned from the recipe's split."""
    from dafnet.assemble import build_data_source
    from dafnet.data.plans import plan_data
    from dafnet.engine.export import read_index

    source, _ = build_data_source(recipe)
    stored = read_index(export).get("plans") if export is not None else None
    plans = plan_data(source, recipe.data, stored, where=f"export {export}" if export is not None else None)
    key = json.dumps([recipe.data.source.model_dump(mode="json"), recipe.data.modalities,
                      (plans or {}).get("spacing_mm")], sort_keys=True)
    if key not in _SUBJECTS:
        _SUBJECTS[key] = source.load()
    return _SUBJECTS[key], plans


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float), encoding="utf-8")
    tmp.replace(path)


def evaluation_batches(method, subjects: list, batch_size: int) -> tuple[list[str], Iterator[dict]]:
    """(the dataset's subject ids, what the batches' ``subject`` indices name; the evaluation batches
    of ``subjects`` on the method's device, the method in eval mode)."""
    dataset = method.eval_dataset(subjects)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=method.collate)
    device = next((p.device for p in method.parameters()), torch.device("cpu"))

    def batches() -> Iterator[dict]:
        method.eval()
        for batch in loader:
            yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    return list(dataset.subject_ids), batches()


@torch.no_grad()
def evaluation_statistics(method, subjects: list, batch_size: int) -> tuple[dict, list[str]]:
    """The method's concatenated evaluation_step statistics over ``subjects`` and the dataset's subject ids."""
    stats: dict[str, list] = {}
    subject_ids, batches = evaluation_batches(method, subjects, batch_size)
    for batch in batches:
        for key, value in method.evaluation_step(batch).items():
            stats.setdefault(key, []).append(value.detach().cpu())
    return {k: torch.cat(v) for k, v in stats.items()}, subject_ids


def evaluate_subjects(method, subjects: list, batch_size: int, part: str) -> tuple[dict, dict]:
    """(the evaluation_step statistics, the per_volume.json record) of ``subjects`` (module docstring)."""
    stats, ids = evaluation_statistics(method, subjects, batch_size)
    references, alignment = reference_volumes(method, *evaluation_batches(method, subjects, batch_size))
    record = {"version": PER_VOLUME_VERSION, "evaluated_on": part,
              "dice": {**per_volume_dice(stats, ids), **references}, "alignment": alignment}
    return stats, record


def per_volume_dice(stats: dict, subject_ids: list[str]) -> dict[str, dict[str, float]]:
    """prediction type -> subject id -> paper Dice (percent; mean over the volume's labelled slices)."""
    from dafnet.metrics.dice import mean_per_volume

    keep = stats["labelled"].bool().numpy()
    subjects = [subject_ids[i] for i in stats["subject"].numpy()[keep]]
    out = {}
    for key in sorted(k for k in stats if k.startswith("paper_")):
        volumes = mean_per_volume(stats[key].float().numpy()[keep], subjects)
        out[key[len("paper_"):]] = {str(v): 100.0 * d for v, d in volumes.items()}
    return out


def _test_subjects(recipe, splits: dict, export: Path | None = None) -> tuple[list, str]:
    part = "test" if splits.get("test") else "validation"
    by_id = {str(s.id): s for s in recipe_subjects(recipe, export)[0]}
    return [by_id[i] for i in splits.get(part, [])], part


def evaluate_export(folder: Path) -> dict:
    """per_volume.json of a trained cell: its exported weights over its own test split."""
    from dafnet.engine.export import exported_recipe, load_export

    method, recipe = load_export(folder), exported_recipe(folder)
    splits = json.loads((folder / "splits.json").read_text())
    subjects, part = _test_subjects(recipe, splits, folder)
    _, record = evaluate_subjects(method, subjects, recipe.train.batch_size, part)
    write_json(folder / "per_volume.json", record)
    return record


def evaluate_untrained(recipe, folder: Path) -> dict:
    """A training-free method (no phases): evaluated on the fold's test split; writes the run files."""
    from accelerate.utils import set_seed

    from dafnet.assemble import build_data_source, build_method
    from dafnet.data.splits import split_data, splits_record
    from dafnet.engine.rundir import recipe_yaml

    set_seed(recipe.train.seed)
    folder.mkdir(parents=True, exist_ok=True)
    _, facts = build_data_source(recipe)
    subjects, plans = recipe_subjects(recipe)
    ids = split_data(subjects, recipe.data)
    splits = splits_record(recipe.data.split, ids)
    (folder / "recipe.yaml").write_text(recipe_yaml(recipe), encoding="utf-8")
    write_json(folder / "splits.json", splits)
    if plans is not None:
        write_json(folder / "plans.json", plans)
    method = build_method(recipe, facts)
    test, part = _test_subjects(recipe, splits)
    stats, record = evaluate_subjects(method, test, recipe.train.batch_size, part)
    summary = {k: float(v) for k, v in method.evaluation_summary(stats).items()}
    write_json(folder / "per_volume.json", record)
    write_json(folder / "summary.json", {"evaluated_on": part, "weights": {"source": "none"}, "summary": summary,
                                          "best_epoch": None, "epochs_run": 0, "stopped_early": False})
    return summary


def evaluate_trained_cell(cell: Cell, folder: Path) -> dict:
    """A cell of a method with ``evaluate_from``: the export of the trained cell ``cell.evaluates``
    (a sibling folder), rebuilt with ``cell.evaluation_overrides``, over that cell's test split."""
    from dafnet.engine.export import exported_recipe, load_export
    from dafnet.engine.rundir import recipe_yaml

    source = folder.parent / cell.evaluates
    if cell_status(source) != "done":
        raise DafnetError(f"cell {cell.evaluates} has not finished, so there is nothing to evaluate",
                          hint="run the experiment again once it has trained")
    method = load_export(source, overrides=cell.evaluation_overrides)
    recipe = exported_recipe(source, cell.evaluation_overrides)
    splits = json.loads((source / "splits.json").read_text())
    subjects, part = _test_subjects(recipe, splits, source)
    stats, record = evaluate_subjects(method, subjects, recipe.train.batch_size, part)
    trained = json.loads((source / "summary.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(recipe_yaml(recipe), encoding="utf-8")
    write_json(folder / "splits.json", splits)
    write_json(folder / "per_volume.json", record)
    summary = {k: float(v) for k, v in method.evaluation_summary(stats).items()}
    write_json(folder / "summary.json", {
        "evaluated_on": part, "summary": summary, "best_epoch": trained.get("best_epoch"), "epochs_run": 0,
        "stopped_early": False, "weights": {"source": "cell", "cell": cell.evaluates,
                                            "overrides": cell.evaluation_overrides, "of": trained.get("weights")}})
    return summary


VALIDATION_RECORD = "per_volume_validation.json"
"""A done cell's per_volume.json over its fold's validation split (``dafnet experiment --split validation``)."""


def _validation_model(cell: Cell, folder: Path):
    """(method, recipe, splits) the validation record of a done cell evaluates: its export, the export of the
    cell it evaluates (with its overrides), or the training-free method built from its recipe."""
    from dafnet.engine.export import exported_recipe, load_export

    if cell.evaluates is not None or cell.trainable:
        source = folder.parent / cell.evaluates if cell.evaluates is not None else folder
        overrides = cell.evaluation_overrides if cell.evaluates is not None else None
        splits = json.loads((source / "splits.json").read_text())
        return load_export(source, overrides=overrides), exported_recipe(source, overrides), splits, source
    from dafnet.assemble import build_data_source, build_method

    _, facts = build_data_source(cell.recipe)
    return build_method(cell.recipe, facts), cell.recipe, json.loads((folder / "splits.json").read_text()), None


def evaluate_validation(cell: Cell, folder: Path) -> dict:
    """The validation record of a done cell (module docstring's format, ``evaluated_on: validation``),
    computed once and kept in ``folder``/per_volume_validation.json; a retrained cell's folder starts empty."""
    path = folder / VALIDATION_RECORD
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    method, recipe, splits, export = _validation_model(cell, folder)
    if not splits.get("validation"):
        raise DafnetError(f"cell {cell.id} has no validation subjects, so it has no validation record",
                          hint="give data.split a validation share, or read the test tables")
    by_id = {str(s.id): s for s in recipe_subjects(recipe, export)[0]}
    subjects = [by_id[i] for i in splits["validation"]]
    _, record = evaluate_subjects(method, subjects, recipe.train.batch_size, "validation")
    write_json(path, record)
    return record


__all__ = ["PER_VOLUME_VERSION", "VALIDATION_RECORD", "cell_status", "evaluate_export", "evaluate_subjects",
           "evaluate_trained_cell", "evaluate_untrained", "evaluate_validation", "evaluation_batches",
           "evaluation_statistics", "per_volume_dice", "per_volume_version", "recipe_subjects", "write_json"]
