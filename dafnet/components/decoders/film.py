"""FiLM decoder (paper Fig. 3e, method.md 1.6): z modulates convolved anatomy channel-wise."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dafnet.components.keras_layers import KERAS_LEAKY_SLOPE, conv2d, dense
from dafnet.errors import DafnetError
from dafnet.interfaces import Decoder, Facts, Params


class FiLMBlock(nn.Module):
    """l1 = LReLU(conv(l)); l2 = LReLU(conv(l1) * gamma(z) + beta(z)); returns l1 + l2."""

    def __init__(self, channels: int, z_dim: int, slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.conv1 = conv2d(channels, channels, 3)
        self.conv2 = conv2d(channels, channels, 3)
        self.gamma = dense(z_dim, channels)
        self.beta = dense(z_dim, channels)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        l1 = F.leaky_relu(self.conv1(x), self.slope)
        gamma = F.leaky_relu(self.gamma(z), self.slope)[:, :, None, None]
        beta = F.leaky_relu(self.beta(z), self.slope)[:, :, None, None]
        l2 = F.leaky_relu(self.conv2(l1) * gamma + beta, self.slope)
        return l1 + l2


class FiLMDecoder(Decoder):
    """conv3x3 + LReLU, FiLM blocks conditioned on z, 1x1 conv + tanh (registry: film)."""

    class Params(Params):
        filters: int | None = Field(
            None, ge=1, description="width of every conv and FiLM block; default: the anatomy channels C (8)"
        )
        num_blocks: int = Field(4, ge=1, description="number of FiLM blocks")
        negative_slope: float = Field(KERAS_LEAKY_SLOPE, ge=0, description="LeakyReLU slope (Keras default 0.3)")

    def __init__(self, params: FiLMDecoder.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        self.anatomy_channels = facts.require("anatomy_channels")
        self.z_dim = facts.require("z_dim")
        width = params.filters or self.anatomy_channels
        self.input_conv = conv2d(self.anatomy_channels, width, 3)
        self.blocks = nn.ModuleList(
            FiLMBlock(width, self.z_dim, params.negative_slope) for _ in range(params.num_blocks)
        )
        self.output_conv = conv2d(width, facts.image_channels, 1, init="glorot_normal")

    def forward(self, anatomy: Tensor, z: Tensor) -> Tensor:
        if anatomy.ndim != 4 or anatomy.shape[1] != self.anatomy_channels:
            raise DafnetError(
                f"FiLM decoder: expected anatomy (B, {self.anatomy_channels}, H, W), got {tuple(anatomy.shape)}"
            )
        if z.shape != (anatomy.shape[0], self.z_dim):
            raise DafnetError(f"FiLM decoder: expected z ({anatomy.shape[0]}, {self.z_dim}), got {tuple(z.shape)}")
        x = F.leaky_relu(self.input_conv(anatomy), self.params.negative_slope)
        for block in self.blocks:
            x = block(x, z)
        return torch.tanh(self.output_conv(x))
