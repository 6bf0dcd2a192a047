"""Planned in-plane spacing (``spacing_mm: auto``), as nnU-Net plans its target spacing.

The median over the training subjects' images of each in-plane axis (row, col of the oriented
slice stack), read from the NIfTI headers only, before any image is decoded: nnU-Net's
``median over the training cases of each axis``, taken here over every sequence of every
training subject (each sequence has its own grid). :func:`plan_data` fixes the spacing of an
``auto`` data source before it loads: from the recipe's training split, or from a number a run
or an export stored. See docs/data.md ("Planned spacing").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dafnet.data.nifti import read_header
from dafnet.data.preprocess import Orientation, canonical_orientation, choose_slice_axis
from dafnet.errors import DafnetError

AUTO = "auto"
RULE = "median over the training subjects' images of each in-plane axis (row, col)"


@dataclass
class Survey:
    """What the headers of a dataset say, before anything is decoded."""

    spacings: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    """Case -> modality -> in-plane (row, col) spacing in mm of its oriented slice stack."""
    labelled: dict[str, set[str]] = field(default_factory=dict)
    """Case -> the modalities with a label file."""


def stack_orientation(shape, affine: np.ndarray, slice_axis, reorient: bool) -> tuple[Orientation, np.ndarray]:
    """The orientation of a file's (X, Y, Z) array into a (slice, row, col) stack and the stack's
    in-plane (row, col) spacing in mm. ``slice_axis`` ``auto``: an axis of length 1 (2D files),
    else the largest voxel spacing (ties: the last axis)."""
    shape = tuple(int(n) for n in shape[:3])
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    flat = [a for a in range(3) if shape[a] == 1]
    axis = flat[-1] if slice_axis == AUTO and flat else choose_slice_axis(spacing, slice_axis)
    orientation = canonical_orientation(affine, shape, axis, reorient)
    oriented = affine @ orientation.matrix()
    return orientation, np.linalg.norm(oriented[:3, 1:3], axis=0)


def header_spacing(path: str | Path, slice_axis, reorient: bool) -> tuple[float, float]:
    """In-plane (row, col) spacing of a NIfTI file's slice stack, from its header alone."""
    shape, affine = read_header(path)
    shape = shape + (1,) if len(shape) == 2 else shape[:3]
    _, spacing = stack_orientation(shape, affine, slice_axis, reorient)
    return float(spacing[0]), float(spacing[1])


def median_spacing(spacings: list[tuple[float, float]]) -> tuple[float, float]:
    """The median of each axis (nnU-Net's rule); not rounded, so data at one spacing keep it exactly."""
    if not spacings:
        raise DafnetError("spacing_mm auto: no image to plan the spacing from")
    median = np.median(np.asarray(spacings, dtype=np.float64), axis=0)
    return float(median[0]), float(median[1])


def plans_record(spacing: tuple[float, float], subjects: int, images: int) -> dict:
    """What a run writes to plans.json and its export's index under ``plans``."""
    return {"spacing_mm": [float(spacing[0]), float(spacing[1])], "rule": RULE,
            "subjects": subjects, "images": images}


def stored_spacing(plans: dict | None) -> tuple[float, float] | None:
    """The (row, col) spacing of a stored plans record, or None when it holds none."""
    value = (plans or {}).get("spacing_mm")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def no_stored_plan(where: str) -> DafnetError:
    """The error for an export whose recipe is ``auto`` but which stores no planned spacing."""
    return DafnetError(f"{where}: its recipe has data.source.params.spacing_mm: auto but it stores no "
                       "planned spacing (no 'plans' with 'spacing_mm' in dafnet_index.json)",
                       hint="the export is incomplete or hand-edited; export the run again with this "
                            "dafnet, or set the spacing the model was trained at in its recipe")


def exported_spacing(value, plans: dict | None, where: str):
    """The concrete ``spacing_mm`` of an export: ``value`` (its recipe's) as it is, or for ``auto``
    the number the export stores (error when it stores none)."""
    if value != AUTO:
        return value
    spacing = stored_spacing(plans)
    if spacing is None:
        raise no_stored_plan(where)
    return list(spacing)


def needs_plan(source) -> bool:
    """Whether ``source`` is a NIfTI-reading source whose ``spacing_mm`` is ``auto``."""
    return getattr(getattr(source, "params", None), "spacing_mm", None) == AUTO and hasattr(source, "survey")


def plan_data(source, data, stored: dict | None = None, *, where: str | None = None) -> dict | None:
    """Fix the spacing of an ``auto`` source before it loads; return its plans record (None when
    the source is not ``auto``).

    ``stored``: a plans record written earlier (a run's plans.json, an export's ``plans``): its
    number is used as it is. ``where`` names an export whose recipe is ``auto``: it must store a
    number (error otherwise). Without either, the median over the images of ``data``'s training
    split (the split the run will use: same ids, same stratification, same seed).
    """
    from dafnet.data.splits import split_subjects

    if not needs_plan(source):
        return None
    spacing = stored_spacing(stored)
    if spacing is not None:
        source.use_spacing(spacing)
        return dict(stored)
    if where is not None:
        raise no_stored_plan(where)
    survey = source.survey()
    target = data.target
    labelled = None if target is None else {c for c, m in survey.labelled.items() if target in m}
    train = split_subjects(list(survey.spacings), data.split, labelled=labelled)["train"]
    spacings = [s for case in train for s in survey.spacings[case].values()]
    spacing = median_spacing(spacings)
    source.use_spacing(spacing)
    return plans_record(spacing, len(train), len(spacings))


__all__ = ["AUTO", "Survey", "exported_spacing", "header_spacing", "median_spacing", "needs_plan",
           "no_stored_plan", "plan_data", "plans_record", "stack_orientation", "stored_spacing"]
