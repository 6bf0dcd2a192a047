"""In-plane geometry of a slice stack (step 3 of :mod:`dafnet.data.preprocess`): resampling to a
target spacing composed with a crop or pad to the target size as one :class:`InPlaneTransform`
(one interpolation: order 1 with anti-aliasing for images, order 0 for labels), its inverse, and
:func:`field_of_view_plan`, which keeps the whole field of view (``dafnet predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

Kind = Literal["image", "label"]

@dataclass(frozen=True)
class InPlaneTransform:
    """Output pixel (r, c) samples input coordinate ``scale * (r, c) + offset`` (pixel centres).

    Covers resampling (``scale`` = output spacing / input spacing) and crop/pad (``offset``).
    """

    in_shape: tuple[int, int]
    out_shape: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]

    def matrix(self) -> np.ndarray:
        """4x4 output voxel (slice, row, col) -> input voxel."""
        m = np.eye(4)
        m[1, 1], m[2, 2] = self.scale
        m[1, 3], m[2, 3] = self.offset
        return m

    def then(self, other: InPlaneTransform) -> InPlaneTransform:
        """``other`` applied to this transform's output (e.g. a crop after a resample)."""
        if tuple(other.in_shape) != tuple(self.out_shape):
            raise ValueError(f"shapes do not chain: {self.out_shape} -> {other.in_shape}")
        scale = tuple(s1 * s2 for s1, s2 in zip(self.scale, other.scale))
        offset = tuple(s1 * o2 + o1 for s1, o1, o2 in zip(self.scale, self.offset, other.offset))
        return InPlaneTransform(self.in_shape, other.out_shape, scale, offset)

    def apply(self, stack: np.ndarray, kind: Kind = "image", fill: float | None = None) -> np.ndarray:
        """Resample an (S, in_H, in_W) stack to (S, out_H, out_W).

        Images: order 1, Gaussian anti-aliasing (sigma = (scale - 1) / 2 input pixels) when
        downsampling, ``fill`` (default -1) outside. Labels: order 0, background outside.
        """
        _check_in_plane(stack, self.in_shape, "input")
        if kind == "label":
            return _sample(stack, self.scale, self.offset, self.out_shape, 0, 0.0).astype(stack.dtype)
        data = np.asarray(stack, dtype=np.float32)
        sigma = [0.0] + [max(0.0, (s - 1.0) / 2.0) for s in self.scale]
        if max(sigma) > 0:
            data = ndimage.gaussian_filter(data, sigma, mode="nearest")
        return _sample(data, self.scale, self.offset, self.out_shape, 1, -1.0 if fill is None else fill)

    def invert(self, stack: np.ndarray, kind: Kind = "label", fill: float | None = None) -> np.ndarray:
        """Map an (S, out_H, out_W) stack back to (S, in_H, in_W).

        Labels: each class's indicator is interpolated linearly and the largest wins
        (background outside the output grid); images: order 1, ``fill`` (default -1) outside.
        """
        _check_in_plane(stack, self.out_shape, "output")
        scale = tuple(1.0 / s for s in self.scale)
        offset = tuple(-o / s for o, s in zip(self.offset, self.scale))
        if kind == "image":
            return _sample(np.asarray(stack, np.float32), scale, offset, self.in_shape, 1,
                           -1.0 if fill is None else fill)
        classes = np.unique(stack)
        if 0 not in classes:
            classes = np.concatenate([[0], classes])
        scores = [_sample((stack == c).astype(np.float32), scale, offset, self.in_shape, 1,
                          1.0 if c == 0 else 0.0) for c in classes]
        return classes[np.argmax(np.stack(scores), axis=0)].astype(stack.dtype)


def _check_in_plane(stack: np.ndarray, shape, what: str) -> None:
    if stack.ndim != 3 or tuple(stack.shape[1:]) != tuple(shape):
        raise ValueError(f"expected an (S, {shape[0]}, {shape[1]}) {what} stack, got {stack.shape}")


def _sample(stack, scale, offset, out_shape, order: int, fill: float) -> np.ndarray:
    out = (stack.shape[0], *out_shape)
    if order == 0:  # nearest: avoid float rounding of integer label values
        return ndimage.affine_transform(stack, (1.0, *scale), (0.0, *offset), output_shape=out,
                                        order=0, mode="constant", cval=fill)
    return ndimage.affine_transform(stack, (1.0, *scale), (0.0, *offset), output_shape=out,
                                    order=order, mode="constant", cval=fill, prefilter=False)


def resample_transform(in_shape, in_spacing, target_spacing) -> InPlaneTransform:
    """Resampling of an in-plane grid to ``target_spacing`` (mm, per axis) over the same field
    of view: round(n * in / target) pixels, centred on the input grid."""
    scale = tuple(float(t) / float(s) for t, s in zip(target_spacing, in_spacing))
    out = tuple(max(1, int(round(n / s))) for n, s in zip(in_shape, scale))
    offset = tuple(((n - 1) - s * (m - 1)) / 2.0 for n, s, m in zip(in_shape, scale, out))
    return InPlaneTransform(tuple(int(n) for n in in_shape), out, scale, offset)


def crop_transform(in_shape, size, center: tuple[float, float] | None = None) -> InPlaneTransform:
    """Crop or pad an in-plane grid to ``size`` around ``center`` (pixel coordinates, default the
    grid centre); the window may leave the grid (padding)."""
    if center is None:
        center = tuple((n - 1) / 2.0 for n in in_shape)
    start = tuple(float(np.floor(c - (s - 1) / 2.0 + 0.5)) for c, s in zip(center, size))
    return InPlaneTransform(tuple(int(n) for n in in_shape), tuple(int(s) for s in size), (1.0, 1.0), start)


def plan_in_plane(in_shape, in_spacing, target_spacing, size,
                  center: tuple[float, float] | None = None) -> InPlaneTransform:
    """Resample to ``target_spacing`` (None keeps the spacing) then crop/pad to ``size`` around
    ``center`` (input pixel coordinates; default the image centre), as one transform."""
    resample, crop = _resample_and_crop(in_shape, in_spacing, target_spacing, size, center)
    return resample.then(crop)


def field_of_view_plan(in_shape, in_spacing, target_spacing, size,
                       center: tuple[float, float] | None = None) -> tuple[InPlaneTransform, tuple[int, int]]:
    """The whole field of view at the networks' spacing, for sliding-window prediction.

    Returns (transform, window): the transform resamples like :func:`plan_in_plane` but keeps
    the whole resampled grid, grown where needed to hold :func:`plan_in_plane`'s crop/pad
    window of ``size`` (so the output is at least ``size``); ``window`` is that window's
    top-left pixel in the output. When the window holds the whole field of view, the
    transform is :func:`plan_in_plane`'s and ``window`` is (0, 0).
    """
    resample, crop = _resample_and_crop(in_shape, in_spacing, target_spacing, size, center)
    crop_start = tuple(int(round(o)) for o in crop.offset)  # integers: see crop_transform
    start = tuple(min(0, c) for c in crop_start)
    stop = tuple(max(n, c + int(s)) for n, c, s in zip(resample.out_shape, crop_start, size))
    grown = InPlaneTransform(resample.out_shape, tuple(b - a for a, b in zip(start, stop)), (1.0, 1.0),
                             tuple(float(a) for a in start))
    return resample.then(grown), tuple(c - a for c, a in zip(crop_start, start))


def _resample_and_crop(in_shape, in_spacing, target_spacing, size, center):
    in_shape = tuple(int(n) for n in in_shape)
    if target_spacing is None:
        resample = InPlaneTransform(in_shape, in_shape, (1.0, 1.0), (0.0, 0.0))
    else:
        resample = resample_transform(in_shape, in_spacing, target_spacing)
    if center is None:
        center = tuple((n - 1) / 2.0 for n in in_shape)
    mid = tuple((c - o) / s for c, o, s in zip(center, resample.offset, resample.scale))  # resampled
    return resample, crop_transform(resample.out_shape, size, mid)


def resample_in_plane(stack, in_spacing, target_spacing, kind: Kind = "image"):
    """(resampled stack, transform): in-plane resampling only."""
    t = resample_transform(stack.shape[1:], in_spacing, target_spacing)
    return t.apply(stack, kind), t


def crop_or_pad(stack, size, center=None, kind: Kind = "image"):
    """(cropped/padded stack, transform): no resampling (padding -1 for images, 0 for labels)."""
    t = crop_transform(stack.shape[1:], size, center)
    return t.apply(stack, kind), t
