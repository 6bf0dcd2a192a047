"""The DAFNet aligner: a thin-plate-spline spatial transformer (method.md 1.4, Fig. 3c)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from dafnet.components.aligners.localisation import LocalisationNet, check_pair
from dafnet.components.aligners.refine import refine_parameters
from dafnet.components.aligners.thin_plate import (
    dense_displacement_matrix,
    pixel_grid,
    sample,
    tps_sampling_grid,
)
from dafnet.interfaces import Aligner, AlignmentOutput, Facts
from dafnet.interfaces import Params as BaseParams


class TPSAligner(Aligner):
    """Warps the moving anatomy onto the fixed one with a TPS on a fixed control grid.

    The localisation net regresses (x, y) offsets of the grid_size x grid_size control
    points (last layer zero-initialised: the first warp is the identity). With
    ``grid_range: unit`` (the original code's) the control grid and the offsets are in a
    [0, 1]^2 frame, so an offset of 1 spans the whole slice; with ``symmetric`` they are in
    the [-1, 1]^2 sampling frame, where the same head output moves pixels half as far. (The
    TPS itself is invariant to a uniform scaling of its coordinates, so the two differ by that
    factor 2 only.) Each
    output pixel p samples the moving anatomy at p + d(p), d the TPS interpolating the offsets
    (kernel r^2 log r, affine part, no regularisation): a fixed (H*W x K) matrix, precomputed
    in float64 and kept as a non-persistent buffer. Bilinear sampling, zero padding,
    ``align_corners=True`` (pixel centres span [-1, 1]). The warped anatomy stays soft.
    """

    class Params(BaseParams):
        grid_size: int = Field(5, ge=2, le=32,
                               description="control points per side of the grid on [-1, 1]^2")
        loc_filters: int = Field(20, ge=1, description="filters of each localisation conv")
        hidden: int = Field(100, ge=1, description="units of the tanh dense layer")
        grid_range: Literal["unit", "symmetric"] = Field(
            "unit", description="frame of the control grid and its offsets: 'unit' [0, 1]^2 (the "
                                "original code's), 'symmetric' [-1, 1]^2 (moves pixels half as far)")
        max_offset: float | None = Field(
            None, gt=0, le=1, description="named deviation, not in the paper (None: unbounded): each control point's "
            "offset per axis is max_offset * tanh(raw / max_offset), at most this fraction of the slice's side, so "
            "the aligner cannot diverge or warp an anatomy out of the frame (docs/method.md)")
        refine_steps: int = Field(
            0, ge=0, le=10000, description="named deviation, not in the paper (0: off): at inference (eval mode) "
            "this many Adam steps on each pair's TPS offsets from the network's prediction, lowering mean "
            "|warped - fixed| of the pair (instance optimisation; training and the weights are unchanged; "
            "docs/method.md)")
        refine_lr: float = Field(
            0.01, gt=0, le=1, description="Adam step of refine_steps, in the sampling frame (2 spans the slice)")

    def __init__(self, params: Params, facts: Facts) -> None:
        super().__init__(params, facts)
        self.channels = facts.require("anatomy_channels")
        self.image_size = tuple(facts.require("image_size"))
        self.num_points = params.grid_size ** 2
        self.offset_scale = 2.0 if params.grid_range == "unit" else 1.0
        self.localisation = LocalisationNet(2 * self.channels, self.image_size,
                                            params.loc_filters, params.hidden,
                                            2 * self.num_points)
        dtype = torch.get_default_dtype()
        height, width = self.image_size
        matrix = dense_displacement_matrix(height, width, params.grid_size)
        self.register_buffer("displacement_matrix", matrix.to(dtype), persistent=False)
        self.register_buffer("base_grid", pixel_grid(height, width).to(dtype), persistent=False)

    def forward(self, moving: Tensor, fixed: Tensor) -> AlignmentOutput:
        check_pair(moving, fixed, self.channels, self.image_size, "TPS aligner")
        offsets = self.localisation(moving, fixed).view(-1, self.num_points, 2)
        if self.params.max_offset is not None:  # in slice-side units: 'symmetric' offsets span 2 per side
            bound = self.params.max_offset * (1.0 if self.params.grid_range == "unit" else 2.0)
            offsets = bound * torch.tanh(offsets / bound)
        # Sampling coordinates in at least float32, also under autocast.
        dtype = torch.promote_types(moving.dtype, torch.float32)
        matrix, base = self.displacement_matrix.to(dtype), self.base_grid.to(dtype)
        with torch.autocast(device_type=moving.device.type, enabled=False):
            displacement = offsets.to(dtype) * self.offset_scale  # in the sampling frame
            if self.params.refine_steps and not self.training:
                displacement = refine_parameters(
                    displacement, lambda m, d: sample(m, tps_sampling_grid(d, matrix, base)), moving.to(dtype),
                    fixed.to(dtype), self.params.refine_steps, self.params.refine_lr)
            grid = tps_sampling_grid(displacement, matrix, base)
            warped = sample(moving, grid)
        return AlignmentOutput(warped=warped, grid=grid, parameters=displacement / self.offset_scale)
