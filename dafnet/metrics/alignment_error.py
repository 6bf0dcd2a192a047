"""The in-plane alignment error against the truth, in mm, per target pixel.

A source that knows the truth gives every pixel the anatomy coordinate (u, v) in mm it shows
(:attr:`~dafnet.interfaces.data.Volume.coordinates`). An aligner's sampling grid says, for each
pixel p of the fixed (target) slice, where in the moving (source) slice it samples (x, y in
[-1, 1], ``align_corners=True`` as every aligner, :mod:`dafnet.components.aligners.thin_plate`).
So at p the aligner's error is ``|(u, v)_source(grid(p)) - (u, v)_target(p)|`` (the source's
coordinates sampled bilinearly at grid(p)) and the identity's is the same with the identity grid,
i.e. ``|(u, v)_source(p) - (u, v)_target(p)|``. Through-plane differences between the paired
slices cannot be aligned in 2D and are not measured.

Error maps are (B, H, W) float32 with NaN where a pixel is not counted: outside ``counted`` (the
caller's choice, e.g. the target's foreground), and, for the aligner, where grid(p) lies outside
the source slice (its coordinate is unknown there; :func:`error_statistics` reports that share).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dafnet.components.aligners.thin_plate import ALIGN_CORNERS, pixel_grid
from dafnet.interfaces.metric import AlignmentErrors

_INSIDE = 1.0 + 1e-5
"""|x|, |y| up to this count as inside the source slice (the identity grid's borders are +-1)."""


def sample_coordinates(coordinates: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
    """``coordinates`` (B, 2, H, W) sampled bilinearly at ``grid`` (B, H, W, 2) -> ((B, 2, H, W),
    (B, H, W) bool: the grid point lies inside the slice)."""
    grid = grid.float()
    sampled = F.grid_sample(coordinates.float(), grid, mode="bilinear", padding_mode="border",
                            align_corners=ALIGN_CORNERS)
    inside = (grid.abs() <= _INSIDE).all(dim=-1)
    return sampled, inside


def error_maps(grid: Tensor, source: Tensor, target: Tensor, counted: Tensor) -> tuple[Tensor, Tensor]:
    """(aligner, identity) error maps in mm (module docstring).

    ``grid`` (B, H, W, 2) the aligner's sampling grid of Align(source -> target); ``source`` and
    ``target`` (B, 2, H, W) coordinates in mm; ``counted`` (B, H, W) bool.
    """
    batch, _, height, width = target.shape
    identity = pixel_grid(height, width, dtype=torch.float32).to(target.device).expand(batch, -1, -1, -1)
    target = target.float()
    out = []
    for sampling_grid in (grid, identity):
        sampled, inside = sample_coordinates(source, sampling_grid)
        error = torch.linalg.vector_norm(sampled - target, dim=1)
        out.append(torch.where(counted & inside, error, torch.full_like(error, float("nan"))))
    return out[0], out[1]


def error_statistics(aligner_mm, identity_mm) -> dict[str, float]:
    """Median and 95th percentile (mm) of both errors over the pixels where both are defined, the
    number of those pixels and the share (percent) of counted pixels the aligner sampled outside
    the source slice. NaN statistics when no pixel is defined."""
    aligner, identity = (np.asarray(torch.as_tensor(x).detach().float().cpu()).ravel()
                         for x in (aligner_mm, identity_mm))
    counted = np.isfinite(identity)
    both = counted & np.isfinite(aligner)
    outside = 100.0 * float((counted & ~both).sum()) / float(counted.sum()) if counted.any() else float("nan")
    out = {"pixels": float(both.sum()), "outside_percent": outside}
    for name, values in (("align", aligner[both]), ("identity", identity[both])):
        out[f"{name}_median_mm"] = float(np.median(values)) if values.size else float("nan")
        out[f"{name}_p95_mm"] = float(np.percentile(values, 95)) if values.size else float("nan")
    return out


__all__ = ["AlignmentErrors", "error_maps", "error_statistics", "sample_coordinates"]
