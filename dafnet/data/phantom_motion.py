"""Acquisition geometry of one phantom stack: slice positions and the misaligning warp.

Each modality of a subject is acquired in its own breath-hold: the stack gets its own
slice offset and spacing along the long axis, an in-plane rotation and shift, and a
smooth non-linear displacement (a coarse random grid upsampled by cubic splines). The
warp maps every pixel to the point of the subject's anatomy it shows, so images and
labels rendered at those points deform together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dafnet.data.phantom_contrast import upsample


@dataclass(frozen=True)
class Acquisition:
    z: np.ndarray
    """(S,) slice positions along the long axis, mm from the subject's base plane."""
    u: np.ndarray
    """(S, H, W) anatomy coordinate (mm) each pixel shows, image-right component."""
    v: np.ndarray
    """(S, H, W) anatomy coordinate (mm), image-down component."""

    @property
    def spacing(self) -> float:
        """Slice spacing in mm (uniform within a stack)."""
        return float(self.z[1] - self.z[0]) if len(self.z) > 1 else 10.0


def slice_positions(rng: np.random.Generator, length: float, slices: int) -> np.ndarray:
    """Evenly spaced positions from near the base to near the apex, offset and spacing random."""
    if slices == 1:
        return np.array([rng.uniform(0.3, 0.6) * length])
    first = rng.uniform(0.0, 0.1) * length
    last = rng.uniform(0.8, 0.92) * length
    return first + (last - first) / (slices - 1) * np.arange(slices, dtype=np.float64)


def pixel_grid(size: tuple[int, int], spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in mm about the image centre: (x to the right, y down), (H, W)."""
    h, w = size
    y = (np.arange(h) - (h - 1) / 2.0) * spacing_mm
    x = (np.arange(w) - (w - 1) / 2.0) * spacing_mm
    return np.meshgrid(x, y, indexing="xy")


def sample_acquisition(rng: np.random.Generator, length: float, slices: int,
                       size: tuple[int, int], spacing_mm: float, max_shift_mm: float,
                       max_rotation_degrees: float, deformation_mm: float) -> Acquisition:
    """Draw one stack's slice positions and pixel-to-anatomy warp."""
    z = slice_positions(rng, length, slices)
    x, y = pixel_grid(size, spacing_mm)
    angle = np.deg2rad(rng.uniform(-max_rotation_degrees, max_rotation_degrees))
    shift = rng.uniform(-max_shift_mm, max_shift_mm, 2)
    c, s = np.cos(angle), np.sin(angle)
    u = c * x - s * y + shift[0]
    v = s * x + c * y + shift[1]
    shape = (slices,) + tuple(size)
    coarse = rng.normal(0.0, deformation_mm, (2, min(3, slices), 5, 5))
    du, dv = (upsample(coarse[i], shape) for i in range(2))
    # float32 halves the cost of evaluating the anatomy; positions stay float64.
    return Acquisition(z, u[None] + du, v[None] + dv)
