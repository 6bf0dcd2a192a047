"""A FiLM decoder with residual conv blocks: (anatomy s, modality z) -> image in [-1, 1].

    h = LReLU(conv3x3(s))                                   # C -> width channels
    for each block b:                                       # num_blocks residual blocks
        u = LReLU(FiLM(norm(conv3x3(h)), gamma_b1, beta_b1))
        u = FiLM(norm(conv3x3(u)), gamma_b2, beta_b2)
        h = LReLU(h + u)
    image = tanh(conv1x1(h))                                # width -> image channels

FiLM(x, gamma, beta) = x * (1 + gamma) + beta, per channel. One MLP maps z to every
gamma and beta of every block; its last layer starts at zero, so a new decoder
modulates nothing (gamma = beta = 0) and learns how z should change the image.
The normalisation has no affine parameters of its own: the FiLM layers are its affine.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dafnet.errors import DafnetError
from dafnet.interfaces import Decoder, Facts, Params

Norm = Literal["instance", "batch", "none"]


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    return nn.Identity()


def film(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """Feature-wise linear modulation of (B, F, H, W) by (B, F) scales and shifts."""
    return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class ResidualFiLMBlock(nn.Module):
    """Two 3x3 convs, each normalised and FiLM-modulated, added to the block's input."""

    def __init__(self, width: int, norm: Norm, slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm1 = _norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = _norm(norm, width)

    def forward(self, x: Tensor, modulation: Tensor) -> Tensor:
        """``modulation`` is (B, 4, width): gamma1, beta1, gamma2, beta2."""
        gamma1, beta1, gamma2, beta2 = modulation.unbind(dim=1)
        u = F.leaky_relu(film(self.norm1(self.conv1(x)), gamma1, beta1), self.slope)
        u = film(self.norm2(self.conv2(u)), gamma2, beta2)
        return F.leaky_relu(x + u, self.slope)


class ResidualFiLMDecoder(Decoder):
    """Residual conv blocks FiLM-conditioned on z (registry name ``residual_film``)."""

    class Params(Params):
        width: int = Field(32, ge=1, le=1024, description="feature channels of the stem and every block")
        num_blocks: int = Field(3, ge=1, le=64, description="number of residual FiLM blocks")
        film_hidden: int = Field(
            64, ge=1, le=4096, description="hidden units of the MLP mapping z to all FiLM scales and shifts"
        )
        norm: Norm = Field(
            "instance", description="parameter-free normalisation before each FiLM: instance, batch or none"
        )
        negative_slope: float = Field(0.2, ge=0, le=1, description="LeakyReLU slope")

    def __init__(self, params: ResidualFiLMDecoder.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        self.anatomy_channels = facts.require("anatomy_channels")
        self.z_dim = facts.require("z_dim")
        width, blocks = params.width, params.num_blocks
        self.stem = nn.Conv2d(self.anatomy_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResidualFiLMBlock(width, params.norm, params.negative_slope) for _ in range(blocks)
        )
        self.film_mlp = nn.Sequential(
            nn.Linear(self.z_dim, params.film_hidden),
            nn.LeakyReLU(params.negative_slope),
            nn.Linear(params.film_hidden, blocks * 4 * width),
        )
        nn.init.zeros_(self.film_mlp[-1].weight)
        nn.init.zeros_(self.film_mlp[-1].bias)
        self.head = nn.Conv2d(width, facts.image_channels, 1)

    def forward(self, anatomy: Tensor, z: Tensor) -> Tensor:
        if anatomy.ndim != 4 or anatomy.shape[1] != self.anatomy_channels:
            raise DafnetError(
                f"residual_film decoder: expected anatomy (B, {self.anatomy_channels}, H, W), "
                f"got {tuple(anatomy.shape)}",
                hint="the anatomy encoder's channels must match the facts the decoder was built with",
            )
        if z.ndim != 2 or z.shape != (anatomy.shape[0], self.z_dim):
            raise DafnetError(
                f"residual_film decoder: expected z ({anatomy.shape[0]}, {self.z_dim}), got {tuple(z.shape)}"
            )
        modulation = self.film_mlp(z).view(z.shape[0], len(self.blocks), 4, self.params.width)
        h = F.leaky_relu(self.stem(anatomy), self.params.negative_slope)
        for index, block in enumerate(self.blocks):
            h = block(h, modulation[:, index])
        return torch.tanh(self.head(h))
