"""The spatial transformer's localisation net (method.md 1.4, Fig. 3c) and input checks.

concat(moving, fixed) (2C channels) -> [5x5 conv valid, LeakyReLU(0.3), maxpool 2] x 2 ->
5x5 conv valid, LeakyReLU(0.3) -> flatten -> Dense(hidden, tanh) -> Dense(outputs).
Keras-default init: glorot-uniform kernels, zero biases. The last Dense is zero-initialised
(weights and bias) by default; the aligner sets its bias to the identity transform.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dafnet.errors import DafnetError

KERNEL = 5
LEAKY_SLOPE = 0.3


def _conv_then_pool(size: int, pool: bool) -> int:
    size = size - (KERNEL - 1)
    return size // 2 if pool else size


def feature_size(size: int) -> int:
    """Spatial size after the three valid 5x5 convolutions and two 2x2 max-pools."""
    return _conv_then_pool(_conv_then_pool(_conv_then_pool(size, True), True), False)


def minimum_input_size() -> int:
    """Smallest side the localisation net accepts (32 pixels)."""
    size = 1
    while feature_size(size) < 1:
        size += 1
    return size


class LocalisationNet(nn.Module):
    """Regresses ``outputs`` transform parameters from a (moving, fixed) anatomy pair."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], filters: int,
                 hidden: int, outputs: int) -> None:
        super().__init__()
        height, width = image_size
        out_h, out_w = feature_size(height), feature_size(width)
        if out_h < 1 or out_w < 1:
            raise DafnetError(
                f"image size {height}x{width} is too small for the aligner's localisation net "
                f"(three valid 5x5 convolutions and two 2x2 max-pools need at least "
                f"{minimum_input_size()}x{minimum_input_size()} pixels)",
                hint="use larger slices, or the 'identity' aligner for tiny images",
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, filters, KERNEL), nn.LeakyReLU(LEAKY_SLOPE), nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, KERNEL), nn.LeakyReLU(LEAKY_SLOPE), nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, KERNEL), nn.LeakyReLU(LEAKY_SLOPE),
            nn.Flatten(),
            nn.Linear(filters * out_h * out_w, hidden), nn.Tanh(),
        )
        self.head = nn.Linear(hidden, outputs)
        for layer in self.features:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, moving: Tensor, fixed: Tensor) -> Tensor:
        """(B, outputs) transform parameters."""
        return self.head(self.features(torch.cat([moving, fixed], dim=1)))


def check_pair(moving: Tensor, fixed: Tensor, channels: int | None,
               image_size: tuple[int, int] | None, who: str) -> None:
    """Raise a :class:`DafnetError` unless both are (B, C, H, W) of the same, expected shape."""
    if moving.dim() != 4 or fixed.dim() != 4:
        raise DafnetError(
            f"{who} expects (B, C, H, W) anatomies, got moving {tuple(moving.shape)} and "
            f"fixed {tuple(fixed.shape)}")
    if moving.shape != fixed.shape:
        raise DafnetError(
            f"{who}: moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} anatomies "
            "differ in shape", hint="both anatomies of a pair must come from slices of one size")
    if channels is not None and moving.shape[1] != channels:
        raise DafnetError(
            f"{who} was built for {channels} anatomy channels, got {moving.shape[1]}")
    if image_size is not None and tuple(moving.shape[-2:]) != tuple(image_size):
        raise DafnetError(
            f"{who} was built for {image_size[0]}x{image_size[1]} images, got "
            f"{moving.shape[-2]}x{moving.shape[-1]}",
            hint="the data source's image_size fact must match the slices fed to the model")
