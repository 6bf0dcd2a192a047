"""Keras-faithful initialisers and the small building blocks the components share.

The original DAFNet code used Keras 2.1.6. Its initialisers differ from PyTorch's
defaults, so every layer here is initialised explicitly:

* ``he_normal``: truncated normal (cut at two standard deviations) with
  std = sqrt(2 / fan_in); Keras 2.1 did not rescale for the truncation.
* ``glorot_normal``: the same with std = sqrt(2 / (fan_in + fan_out)).
* ``glorot_uniform`` (the Keras default for Conv2D and Dense): U(-l, l) with
  l = sqrt(6 / (fan_in + fan_out)).
* Biases start at zero (Keras default).

Keras BatchNormalization(momentum=0.99, epsilon=1e-3) is PyTorch
``BatchNorm2d(eps=1e-3, momentum=0.01)``: PyTorch's momentum weighs the new batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

Init = Literal["he_normal", "glorot_normal", "glorot_uniform"]

KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01
KERAS_LEAKY_SLOPE = 0.3
"""Keras ``LeakyReLU()`` default alpha, used wherever the original wrote ``LeakyReLU()``."""


def _fans(weight: Tensor) -> tuple[int, int]:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return fan_in, fan_out


def init_weight(weight: Tensor, scheme: Init) -> Tensor:
    """Initialise a conv or linear weight in place the way Keras 2.1 named ``scheme`` does."""
    fan_in, fan_out = _fans(weight)
    with torch.no_grad():
        if scheme == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            return weight.uniform_(-limit, limit)
        if scheme == "he_normal":
            std = math.sqrt(2.0 / fan_in)
        elif scheme == "glorot_normal":
            std = math.sqrt(2.0 / (fan_in + fan_out))
        else:
            raise ValueError(f"unknown initialiser {scheme!r}")
        return nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


def _init_layer(layer: nn.Conv2d | nn.Linear, scheme: Init) -> None:
    init_weight(layer.weight, scheme)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: Literal["same", "valid"] = "same",
    bias: bool = True,
    init: Init = "glorot_uniform",
) -> nn.Conv2d:
    """A Keras-style ``Conv2D``: 'same' or 'valid' padding, Keras initialisation."""
    if padding == "same" and stride != 1:
        raise ValueError("'same' padding is only used with stride 1 here")
    layer = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding="same" if padding == "same" else 0,
        bias=bias,
    )
    _init_layer(layer, init)
    return layer


def dense(in_features: int, out_features: int, *, init: Init = "glorot_uniform") -> nn.Linear:
    """A Keras-style ``Dense`` with Keras initialisation."""
    layer = nn.Linear(in_features, out_features)
    _init_layer(layer, init)
    return layer


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Keras ``BatchNormalization()`` defaults in PyTorch terms (eps 1e-3, momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


class ConvBlock(nn.Sequential):
    """[3x3 conv (same) -> BatchNorm -> ReLU] x 2, he-normal init (U-Net and segmentor block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv2d(in_channels, out_channels, 3, init="he_normal"),
            batch_norm(out_channels),
            nn.ReLU(),
            conv2d(out_channels, out_channels, 3, init="he_normal"),
            batch_norm(out_channels),
            nn.ReLU(),
        )


def valid_conv_size(size: int, kernel: int, stride: int) -> int:
    """Output length of a 'valid' (unpadded) convolution."""
    return (size - kernel) // stride + 1


def count_trainable(module: nn.Module) -> int:
    """Trainable parameters (Keras' 'trainable params': BatchNorm gamma/beta, not statistics)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
