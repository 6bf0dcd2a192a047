"""The no-op aligner (an ablation): the moving anatomy is used as is."""

from __future__ import annotations

from torch import Tensor

from dafnet.components.aligners.localisation import check_pair
from dafnet.components.aligners.thin_plate import pixel_grid
from dafnet.interfaces import Aligner, AlignmentOutput, Facts
from dafnet.interfaces import Params as BaseParams


class IdentityAligner(Aligner):
    """Returns ``moving`` unchanged; ``grid`` is the identity grid, ``parameters`` is (B, 0)."""

    class Params(BaseParams):
        pass

    def __init__(self, params: Params, facts: Facts) -> None:
        super().__init__(params, facts)

    def forward(self, moving: Tensor, fixed: Tensor) -> AlignmentOutput:
        check_pair(moving, fixed, None, None, "identity aligner")
        batch, _, height, width = moving.shape
        grid = pixel_grid(height, width, dtype=moving.dtype).to(moving.device)
        return AlignmentOutput(warped=moving, grid=grid.expand(batch, -1, -1, -1),
                               parameters=moving.new_zeros(batch, 0))
