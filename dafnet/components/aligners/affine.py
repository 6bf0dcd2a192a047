"""An affine spatial transformer: the TPS aligner's localisation net regressing a 2x3 matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from dafnet.components.aligners.localisation import LocalisationNet, check_pair
from dafnet.components.aligners.thin_plate import ALIGN_CORNERS, sample
from dafnet.interfaces import Aligner, AlignmentOutput, Facts
from dafnet.interfaces import Params as BaseParams

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class AffineAligner(Aligner):
    """Warps with ``F.affine_grid``; Dense(6) starts at zero weights and an identity bias.

    ``theta`` maps output (x, y, 1) to source (x, y) in the same ``align_corners=True``
    frame as the TPS aligner; ``parameters`` is theta, (B, 2, 3).
    """

    class Params(BaseParams):
        loc_filters: int = Field(20, ge=1, description="filters of each localisation conv")
        hidden: int = Field(100, ge=1, description="units of the tanh dense layer")

    def __init__(self, params: Params, facts: Facts) -> None:
        super().__init__(params, facts)
        self.channels = facts.require("anatomy_channels")
        self.image_size = tuple(facts.require("image_size"))
        self.localisation = LocalisationNet(2 * self.channels, self.image_size,
                                            params.loc_filters, params.hidden, 6)
        with torch.no_grad():
            self.localisation.head.bias.copy_(torch.tensor(IDENTITY_THETA))

    def forward(self, moving: Tensor, fixed: Tensor) -> AlignmentOutput:
        check_pair(moving, fixed, self.channels, self.image_size, "affine aligner")
        theta = self.localisation(moving, fixed).view(-1, 2, 3)
        dtype = torch.promote_types(moving.dtype, torch.float32)
        with torch.autocast(device_type=moving.device.type, enabled=False):
            theta = theta.to(dtype)
            grid = F.affine_grid(theta, list(moving.shape), align_corners=ALIGN_CORNERS)
            warped = sample(moving, grid)
        return AlignmentOutput(warped=warped, grid=grid, parameters=theta)
