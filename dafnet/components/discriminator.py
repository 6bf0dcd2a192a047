"""LS-GAN critic for masks and images (method.md 1.7).

4x4 unpadded convs (64 s2, 128 s2, 256 s2, 512 s1), each LeakyReLU(0.2), flatten,
Dense(1), no sigmoid. Spectral normalisation (``torch.nn.utils.parametrizations``)
wraps every conv: it keeps the weight as one trainable tensor and adds only power-
iteration buffers, so trainable-parameter counts are those of the plain network.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from dafnet.components.keras_layers import conv2d, dense, valid_conv_size
from dafnet.errors import DafnetError
from dafnet.interfaces import Discriminator, Facts, Params


class LSGANConvDiscriminator(Discriminator):
    """Strided 4x4 conv critic with spectral norm; input channels = facts.critic_channels (registry: lsgan_conv)."""

    class Params(Params):
        filters: tuple[int, ...] = Field((64, 128, 256, 512), min_length=1, description="filters of each 4x4 conv")
        strides: tuple[int, ...] = Field((2, 2, 2, 1), min_length=1, description="stride of each 4x4 conv")
        kernel_size: int = Field(4, ge=1, description="side of every conv kernel ('valid' padding)")
        negative_slope: float = Field(0.2, ge=0, description="LeakyReLU slope after each conv")
        spectral_norm: bool = Field(True, description="spectral normalisation of the convs (the paper's choice)")

        @model_validator(mode="after")
        def _same_length(self):
            if len(self.filters) != len(self.strides):
                raise ValueError(f"filters {self.filters} and strides {self.strides} must have the same length")
            if any(v < 1 for v in self.filters + self.strides):
                raise ValueError("filters and strides must be >= 1")
            return self

    def __init__(self, params: LSGANConvDiscriminator.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        self.in_channels = facts.require("critic_channels")
        height, width = facts.require("image_size")
        convs, channels, h, w = [], self.in_channels, height, width
        for f, stride in zip(params.filters, params.strides):
            conv = conv2d(channels, f, params.kernel_size, stride=stride, padding="valid", init="he_normal")
            convs.append(apply_spectral_norm(conv) if params.spectral_norm else conv)
            channels = f
            h, w = valid_conv_size(h, params.kernel_size, stride), valid_conv_size(w, params.kernel_size, stride)
            if h < 1 or w < 1:
                raise DafnetError(
                    f"discriminator: image size {height}x{width} is too small for its "
                    f"{len(params.filters)} unpadded {params.kernel_size}x{params.kernel_size} convolutions",
                    hint="use larger images or fewer discriminator filters",
                )
        self.convs = nn.ModuleList(convs)
        self.feature_shape = (channels, h, w)
        self.score = dense(channels * h * w, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise DafnetError(
                f"discriminator: expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.params.negative_slope)
        if tuple(x.shape[1:]) != self.feature_shape:
            raise DafnetError(
                f"discriminator: built for images of size {self.facts.image_size}, got an input of "
                f"spatial size {tuple(x.shape[-2:])}"
            )
        return self.score(x.flatten(1))
