"""Checks of a loaded volume stack that warn or refuse: constant slices at the ends, the distinct
label values, sequences whose slice normals differ (used by the nnU-Net source and ``dafnet data
check``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dafnet.data.preprocess import constant_slices
from dafnet.errors import DafnetError
from dafnet.interfaces import Volume

NORMAL_ANGLE_WARNING_DEGREES = 10.0


def present_values(values: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array (bincount when they are small and non-negative)."""
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < 1 << 16:
        return np.flatnonzero(np.bincount(values.ravel(), minlength=high + 1))
    return np.unique(values)


def usable_slices(stack: np.ndarray, path: Path) -> tuple[int, int]:
    """[start, stop) without the constant slices at the ends (warns); error when none is left."""
    constant = constant_slices(stack)
    if constant.all():
        raise DafnetError(f"{path}: no usable slice, every slice is constant (value {stack.flat[0]:g})",
                          hint="check the file; remove it (the channel becomes missing for this case)")
    kept = np.flatnonzero(~constant)
    start, stop = int(kept[0]), int(kept[-1]) + 1
    inner = int(constant[start:stop].sum())
    if start or stop < len(stack) or inner:
        warnings.warn(f"{path}: dropped {start + len(stack) - stop} constant slice(s) at the ends of "
                      f"the stack; {inner} constant slice(s) inside it are kept as background",
                      stacklevel=3)
    return start, stop


def warn_if_normals_differ(case: str, volumes: dict[str, Volume]) -> None:
    """Warn when the slice normals of a case's sequences differ by more than
    NORMAL_ANGLE_WARNING_DEGREES (pairing by slice position then means little); used when
    loading a dataset and by ``dafnet data check``."""
    normals = {n: v.affine[:3, 0] / np.linalg.norm(v.affine[:3, 0]) for n, v in volumes.items()}
    names = list(normals)
    for other in names[1:]:
        cos = float(np.clip(normals[names[0]] @ normals[other], -1.0, 1.0))
        angle = np.degrees(np.arccos(cos))
        if angle > NORMAL_ANGLE_WARNING_DEGREES:
            warnings.warn(f"case {case!r}: the slice normals of {names[0]!r} and {other!r} differ by "
                          f"{angle:.0f} degrees; slice positions do not pair these stacks well",
                          stacklevel=3)
