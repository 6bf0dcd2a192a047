"""What ``dafnet evaluate`` evaluates on: the run of an export, its recipe with other data, the
chosen split's subjects, the data checked against the exported model, and each volume's geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dafnet.errors import DafnetError


def run_root(path: Path) -> Path:
    """The run folder of an export path (the export folder's parent when it is ``export/``)."""
    path = path.parent if path.is_file() else path
    return path.parent if (path / "dafnet_index.json").is_file() and path.name == "export" else path


def recipe_with_data(recipe, data: str | None):
    """The export's recipe, with the data section of another recipe or another dataset folder."""
    if data is None:
        return recipe, False
    folder = Path(data).expanduser()
    if folder.is_dir():
        params = dict(recipe.data.source.params)
        if "root" not in params:
            raise DafnetError(f"--data {data}: the export's data source {recipe.data.source.name!r} does not "
                              "read a dataset folder", hint="give a recipe whose data section reads your data")
        params["root"] = str(folder)
        source = recipe.data.source.model_copy(update={"params": params})
        return recipe.model_copy(update={"data": recipe.data.model_copy(update={"source": source})}), True
    from dafnet.config import find_recipe, load_recipe

    try:
        other = load_recipe(find_recipe(data))
    except DafnetError as exc:
        raise DafnetError(f"--data {data}: neither a dataset folder nor a recipe ({exc.message})",
                          hint="give a dataset folder for the export's data source or a recipe YAML") from exc
    return recipe.model_copy(update={"data": other.data}), True


def check_facts(exported, facts) -> None:
    problems = []
    for name in ("image_size", "num_classes"):
        if getattr(exported, name) is not None and tuple(np.atleast_1d(getattr(exported, name))) != \
                tuple(np.atleast_1d(getattr(facts, name))):
            problems.append(f"{name} {getattr(facts, name)} (the model: {getattr(exported, name)})")
    missing = [m for m in exported.modalities or () if m not in (facts.modalities or ())]
    if missing:
        problems.append(f"no modalities {missing}")
    if problems:
        raise DafnetError("the data do not fit the exported model: " + "; ".join(problems),
                          hint="evaluate on data prepared like the training data")


def split_subjects(recipe, subjects, root: Path, use_run_splits: bool, split: str) -> tuple[list, str]:
    from dafnet.data.splits import split_data

    by_id = {s.id: s for s in subjects}
    if split == "all":
        return list(subjects), "all subjects"
    path = root / "splits.json"
    if use_run_splits and path.is_file():
        ids = json.loads(path.read_text(encoding="utf-8")).get(split, [])
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DafnetError(f"{path} names subjects the data do not have: {missing[:5]}",
                              hint="evaluate on the data the run was trained on, or use --split all")
        source = str(path)
    else:
        ids = [str(i) for i in split_data(subjects, recipe.data)[split]]
        source = f"split_subjects (fold {recipe.data.split.fold}, seed {recipe.data.split.seed})"
    return [by_id[i] for i in ids], source


def volume_geometry(volume) -> tuple[tuple[float, float], float | None]:
    """((row, col) spacing in mm from the affine, slice spacing in mm or None when irregular)."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    spacing = (float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 2])))
    spacing = tuple(s if s > 0 else 1.0 for s in spacing)
    steps = np.abs(np.diff(np.asarray(volume.slice_positions, dtype=np.float64)))
    if steps.size == 0 or steps.min() <= 0 or steps.max() - steps.min() > 1e-3 * steps.max():
        return spacing, None
    return spacing, float(steps.mean())


__all__ = ["check_facts", "recipe_with_data", "run_root", "split_subjects", "volume_geometry"]
