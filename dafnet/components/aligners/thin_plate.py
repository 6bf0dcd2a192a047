"""Thin-plate-spline math for a fixed control grid (method.md 1.4).

Coordinates are (x, y) in the ``grid_sample`` frame with ``align_corners=True``: pixel
centre j of a row of width W sits at ``-1 + 2 j / (W - 1)``, so the corner pixel centres
are exactly at +-1 and the outermost control points of the grid on [-1, 1]^2 lie on them.

The spline interpolating offsets ``d_k`` at fixed control points ``c_k`` is

    f(p) = sum_k w_k U(|p - c_k|) + a_0 + a_x x + a_y y,   U(r) = r^2 log r,  U(0) = 0,

with ``[[K, P], [P^T, 0]] [w; a] = [d; 0]`` (no regularisation). As the control points
never move, ``f`` evaluated at every pixel is a constant (P x K) matrix times ``d``;
:func:`tps_interpolation_matrix` computes that matrix once (in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ALIGN_CORNERS = True
"""The ``grid_sample`` convention of every aligner: pixel centres span [-1, 1] exactly."""


def control_grid(grid_size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """(grid_size**2, 2) control points (x, y) on [-1, 1]^2; x varies fastest (row-major)."""
    axis = torch.linspace(-1.0, 1.0, grid_size, dtype=dtype)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """(H, W, 2) pixel-centre coordinates (x, y) in the ``align_corners=True`` frame."""
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y], dim=-1)


def displacement_from_identity(grid: Tensor) -> Tensor:
    """(B, H, W, 2) sampling grid (``align_corners=True``) -> (B, H, W, 2) its displacement from the identity,
    per axis as a fraction of the slice's side (grid units span 2 per side)."""
    return (grid - pixel_grid(grid.shape[1], grid.shape[2], dtype=grid.dtype).to(grid.device)) / 2


def tps_kernel(squared_distance: Tensor) -> Tensor:
    """U(r) = r^2 log r = 0.5 r^2 log r^2, with U(0) = 0, from squared distances."""
    positive = squared_distance > 0
    safe = torch.where(positive, squared_distance, torch.ones_like(squared_distance))
    return torch.where(positive, 0.5 * safe * torch.log(safe), torch.zeros_like(safe))


def _basis(points: Tensor, centres: Tensor) -> Tensor:
    """(P, K + 3) rows [U(|p - c_1|) ... U(|p - c_K|), 1, x, y]."""
    squared = (points[:, None, :] - centres[None, :, :]).pow(2).sum(-1)
    ones = torch.ones(points.shape[0], 1, dtype=points.dtype)
    return torch.cat([tps_kernel(squared), ones, points], dim=1)


def tps_interpolation_matrix(points: Tensor, centres: Tensor) -> Tensor:
    """(P, K) matrix A with f(points) = A @ values for the TPS interpolating ``values`` at ``centres``.

    Solved in float64; ``points`` (P, 2) and ``centres`` (K, 2) are (x, y). The K centres
    must not all be collinear (the affine part would be undetermined).
    """
    points, centres = points.to(torch.float64), centres.to(torch.float64)
    k = centres.shape[0]
    kernel = tps_kernel((centres[:, None, :] - centres[None, :, :]).pow(2).sum(-1))
    affine = torch.cat([torch.ones(k, 1, dtype=torch.float64), centres], dim=1)
    system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
    system[:k, :k] = kernel
    system[:k, k:] = affine
    system[k:, :k] = affine.T
    # [w; a] = system^-1 [values; 0], so only the first K columns of the inverse matter.
    selector = torch.zeros(k + 3, k, dtype=torch.float64)
    selector[:k] = torch.eye(k, dtype=torch.float64)
    coefficients = torch.linalg.solve(system, selector)  # (K + 3, K)
    return _basis(points, centres) @ coefficients


def dense_displacement_matrix(height: int, width: int, grid_size: int) -> Tensor:
    """(H * W, grid_size**2) float64 map from control-point offsets to per-pixel displacement."""
    pixels = pixel_grid(height, width).reshape(-1, 2)
    return tps_interpolation_matrix(pixels, control_grid(grid_size))


def tps_sampling_grid(offsets: Tensor, matrix: Tensor, base_grid: Tensor) -> Tensor:
    """(B, H, W, 2) source locations p + displacement(p) for (B, K, 2) offsets.

    ``matrix`` is (H * W, K) from :func:`dense_displacement_matrix`, ``base_grid`` the
    (H, W, 2) :func:`pixel_grid`; both in the dtype of ``offsets``.
    """
    batch, k, _ = offsets.shape
    height, width, _ = base_grid.shape
    # One (HW x K) @ (K x 2B) product is several times faster than a batched matmul.
    flat = offsets.permute(1, 0, 2).reshape(k, 2 * batch)
    displacement = (matrix @ flat).view(height, width, batch, 2).permute(2, 0, 1, 3)
    return displacement + base_grid


def sample(image: Tensor, grid: Tensor) -> Tensor:
    """Bilinear backward warp with zero padding in the aligners' ``align_corners`` convention, computed in
    the grid's dtype (the aligners keep grids in at least float32, also under autocast) and returned in the
    image's."""
    return F.grid_sample(image.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=ALIGN_CORNERS).to(image.dtype)


def tps_warp(image: Tensor, offsets: Tensor, matrix: Tensor, base_grid: Tensor) -> Tensor:
    """Warp (B, C, H, W) ``image`` by the TPS with control-point ``offsets`` (B, K, 2)."""
    return sample(image, tps_sampling_grid(offsets, matrix, base_grid))
