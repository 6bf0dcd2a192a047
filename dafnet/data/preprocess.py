"""Pure preprocessing of a 3D volume into a stack of 2D slices, and its inverse.

Steps (each a function here, used in this order by :mod:`dafnet.data.nnunet`):

1. :func:`canonical_orientation` / :class:`Orientation`: the slice axis first, in-plane
   axes in radiological display order (axial: rows anterior->posterior, columns
   patient right->left), slice index increasing towards +R/+A/+S.
2. :func:`constant_slices` and :func:`normalise_intensity`: percentile clipping and
   min-max rescale to [-1, 1], per slice or per volume.
3. :class:`InPlaneTransform` (:mod:`dafnet.data.in_plane`): in-plane resampling to a target
   spacing composed with a crop or pad to the target size (one interpolation: order 1 with
   anti-aliasing for images, order 0 for labels). :meth:`InPlaneTransform.invert` maps a prediction back.
   :func:`field_of_view_plan` keeps the whole field of view instead (``dafnet predict``).
4. :class:`PreprocessRecord` holds all of it and restores an (S, H, W) array to the source
   file's voxel grid (:meth:`PreprocessRecord.restore`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from dafnet.data.in_plane import (
    InPlaneTransform,
    Kind,
    crop_or_pad,
    crop_transform,
    field_of_view_plan,
    plan_in_plane,
    resample_in_plane,
    resample_transform,
)
from dafnet.errors import DafnetError

__all__ = [
    "InPlaneTransform", "Kind", "Orientation", "PreprocessRecord", "canonical_orientation", "choose_slice_axis",
    "constant_slices", "crop_or_pad", "crop_transform", "field_of_view_plan", "foreground_centroid",
    "label_centroid", "normalise_intensity", "plan_in_plane", "resample_in_plane", "resample_transform",
    "slice_positions",
]

# Radiological display: for a slice normal along world axis w, (row axis, row sign), (col axis, col sign).
_DISPLAY = {
    2: ((1, -1), (0, -1)),  # axial: rows towards posterior, columns towards patient left
    1: ((2, -1), (0, -1)),  # coronal: rows towards inferior, columns towards patient left
    0: ((2, -1), (1, -1)),  # sagittal: rows towards inferior, columns towards posterior
}


# ---------------------------------------------------------------- orientation
def choose_slice_axis(spacing, slice_axis: int | Literal["auto"] = "auto") -> int:
    """The array axis slices are taken along: ``auto`` = largest voxel spacing, ties -> last axis."""
    if slice_axis != "auto":
        return int(slice_axis)
    spacing = np.asarray(spacing, dtype=np.float64)
    largest = np.isclose(spacing, spacing.max(), rtol=1e-3, atol=1e-6)
    return int(np.flatnonzero(largest)[-1])


@dataclass(frozen=True)
class Orientation:
    """Axis permutation and flips from a source array to the (slice, row, col) stack."""

    source_shape: tuple[int, int, int]
    axes: tuple[int, int, int]
    """Source axis of each stack axis (slice, row, col)."""
    flips: tuple[bool, bool, bool]
    """Whether each stack axis runs against its source axis."""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.source_shape[a] for a in self.axes)

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.axes)
        flip_axes = tuple(d for d in range(3) if self.flips[d])
        return np.ascontiguousarray(np.flip(out, flip_axes) if flip_axes else out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        flip_axes = tuple(d for d in range(3) if self.flips[d])
        out = np.flip(array, flip_axes) if flip_axes else array
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.axes)))

    def matrix(self) -> np.ndarray:
        """4x4 stack voxel -> source voxel."""
        m = np.zeros((4, 4))
        m[3, 3] = 1.0
        for d, (a, f) in enumerate(zip(self.axes, self.flips)):
            m[a, d] = -1.0 if f else 1.0
            m[a, 3] = self.source_shape[a] - 1.0 if f else 0.0
        return m


def canonical_orientation(affine: np.ndarray, shape, slice_axis: int, reorient: bool = True) -> Orientation:
    """Orientation putting ``slice_axis`` first; with ``reorient`` in radiological display order
    (see the module docstring), judged by the world axis nearest each array axis."""
    import nibabel.orientations as nio

    shape = tuple(int(n) for n in shape[:3])
    others = tuple(a for a in range(3) if a != slice_axis)
    if not reorient:
        return Orientation(shape, (slice_axis, *others), (False, False, False))
    ornt = nio.io_orientation(affine)  # per array axis: (world axis, +-1)
    world = {int(ornt[a, 0]): (a, int(ornt[a, 1])) for a in range(3)}
    normal_world = int(ornt[slice_axis, 0])
    (row_world, row_sign), (col_world, col_sign) = _DISPLAY[normal_world]
    row_axis, row_dir = world[row_world]
    col_axis, col_dir = world[col_world]
    flips = (int(ornt[slice_axis, 1]) < 0, row_dir != row_sign, col_dir != col_sign)
    return Orientation(shape, (slice_axis, row_axis, col_axis), flips)


# ---------------------------------------------------------------- intensity
def constant_slices(stack: np.ndarray) -> np.ndarray:
    """(S,) bool, True where a slice holds a single value."""
    flat = stack.reshape(stack.shape[0], -1)
    return flat.max(axis=1) == flat.min(axis=1)


def normalise_intensity(stack: np.ndarray, clip_percentiles: tuple[float, float] | None = (0.5, 99.5),
                        scope: Literal["slice", "volume"] = "slice") -> np.ndarray:
    """Clip to percentiles (optional), then min-max rescale to [-1, 1], per slice or per volume.

    A slice (scope ``slice``) or volume whose clipped range is empty becomes -1 everywhere.
    """
    stack = np.asarray(stack, dtype=np.float64)
    groups = [stack] if scope == "volume" else list(stack)
    out = np.empty(stack.shape, dtype=np.float32)
    targets = [out] if scope == "volume" else list(out)
    for values, target in zip(groups, targets):
        if clip_percentiles is not None:
            low, high = np.percentile(values, clip_percentiles)
        else:
            low, high = values.min(), values.max()
        if high <= low:
            target[...] = -1.0
            continue
        target[...] = np.clip((np.clip(values, low, high) - low) / (high - low) * 2.0 - 1.0, -1.0, 1.0)
    return out


# ---------------------------------------------------------------- crop centres
def label_centroid(label: np.ndarray) -> tuple[float, float] | None:
    """In-plane (row, col) centroid of the nonzero voxels of an (S, H, W) or (H, W) array,
    or None when there are none."""
    counts = np.count_nonzero(label, axis=0) if label.ndim == 3 else (label != 0).astype(np.int64)
    total = counts.sum()
    if total == 0:
        return None
    row = float(counts.sum(axis=1) @ np.arange(counts.shape[0])) / total
    col = float(counts.sum(axis=0) @ np.arange(counts.shape[1])) / total
    return row, col


def foreground_centroid(stack: np.ndarray) -> tuple[float, float]:
    """In-plane centroid of the voxels brighter than the volume mean (falls back to the centre)."""
    found = label_centroid(stack > stack.mean())
    if found is None:
        return (stack.shape[-2] - 1) / 2.0, (stack.shape[-1] - 1) / 2.0
    return found


# ---------------------------------------------------------------- the whole record
@dataclass(frozen=True)
class PreprocessRecord:
    """How one (S, H, W) stack was made from a source file, enough to map predictions back."""

    source: str
    source_affine: np.ndarray
    orientation: Orientation
    slices: tuple[int, int]
    """[start, stop) of the kept slices in the oriented stack (constant end slices dropped)."""
    in_plane: InPlaneTransform
    window: tuple[int, int] | None = None
    """For a stack of the whole field of view (:func:`field_of_view_plan`): the top-left pixel
    of the networks' crop/pad window in it; None when the stack is that window."""

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> world of the preprocessed (S, H, W) stack."""
        trim = np.eye(4)
        trim[0, 3] = self.slices[0]
        return self.source_affine @ self.orientation.matrix() @ trim @ self.in_plane.matrix()

    def restore(self, stack: np.ndarray, kind: Kind = "label") -> np.ndarray:
        """An (S, H, W) prediction on the preprocessed grid -> the source file's voxel grid
        (dropped slices and regions outside the crop: background 0 / image -1)."""
        start, stop = self.slices
        if stack.shape[0] != stop - start:
            raise DafnetError(f"restore: {stack.shape[0]} slices given, the stack of {self.source} has "
                              f"{stop - start}")
        in_plane = self.in_plane.invert(stack, kind)
        full = np.full(self.orientation.shape, 0 if kind == "label" else -1.0, dtype=in_plane.dtype)
        full[start:stop] = in_plane
        return self.orientation.invert(full)

    def restore_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """(S, K, H, W) class probabilities on the preprocessed grid -> (K, *file grid) float32:
        each class interpolated linearly in-plane (as :meth:`restore` does with a label's class
        indicators), background 1 and the other classes 0 outside the stack and on dropped
        slices, so every voxel's probabilities still sum to 1 and their argmax is
        ``restore(probabilities.argmax(1))`` wherever the probabilities are one-hot."""
        start, stop = self.slices
        if probabilities.ndim != 4 or probabilities.shape[0] != stop - start:
            raise DafnetError(f"restore: probabilities of shape {probabilities.shape} given, the stack of "
                              f"{self.source} has {stop - start} slices")
        classes = []
        for k in range(probabilities.shape[1]):
            fill = 1.0 if k == 0 else 0.0
            full = np.full(self.orientation.shape, fill, dtype=np.float32)
            full[start:stop] = self.in_plane.invert(probabilities[:, k], "image", fill=fill)
            classes.append(self.orientation.invert(full))
        return np.stack(classes)

    def preprocess_label(self, mask: np.ndarray) -> np.ndarray:
        """A class-index array on the source file's grid -> the preprocessed (S, H, W) grid
        (order 0; background outside): the forward map of :meth:`restore`."""
        start, stop = self.slices
        stack = self.orientation.apply(np.asarray(mask).reshape(self.orientation.source_shape))[start:stop]
        return self.in_plane.apply(stack, "label")


def slice_positions(affine: np.ndarray, shape) -> np.ndarray:
    """(S,) mm: each slice centre of an (S, H, W) stack projected on the stack normal
    (the world direction of the slice axis)."""
    s, h, w = shape
    normal = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    voxels = np.stack([np.arange(s), np.full(s, (h - 1) / 2.0), np.full(s, (w - 1) / 2.0), np.ones(s)])
    return (affine[:3] @ voxels).T @ normal
