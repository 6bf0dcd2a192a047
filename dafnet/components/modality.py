"""Modality encoder: a VAE q(z | x, s) shared by all modalities (method.md 1.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dafnet.components.keras_layers import KERAS_LEAKY_SLOPE, conv2d, dense, valid_conv_size
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, ModalityEncoder, ModalityOutput, Params


class VAEModalityEncoder(ModalityEncoder):
    """concat(s, x) -> unpadded stride-2 3x3 convs -> Dense -> (mu, logvar) heads (registry: vae)."""

    class Params(Params):
        z_dim: int = Field(8, ge=1, description="n_z, size of the modality factor z")
        filters: tuple[int, ...] = Field(
            (16, 32, 64, 128), min_length=1, description="filters of the stride-2 3x3 'valid' convs"
        )
        dense_units: int = Field(32, ge=1, description="width of the Dense layer before the mu/logvar heads")
        negative_slope: float = Field(KERAS_LEAKY_SLOPE, ge=0, description="LeakyReLU slope (Keras default 0.3)")

    def __init__(self, params: VAEModalityEncoder.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        if any(f < 1 for f in params.filters):
            raise DafnetError(f"modality encoder: filters must be >= 1, got {params.filters}")
        height, width = facts.require("image_size")
        in_channels = facts.require("anatomy_channels") + facts.image_channels
        convs = []
        h, w = height, width
        for f in params.filters:
            convs.append(conv2d(in_channels, f, 3, stride=2, padding="valid", init="he_normal"))
            in_channels = f
            h, w = valid_conv_size(h, 3, 2), valid_conv_size(w, 3, 2)
            if h < 1 or w < 1:
                raise DafnetError(
                    f"modality encoder: image size {height}x{width} is too small for "
                    f"{len(params.filters)} unpadded stride-2 3x3 convolutions",
                    hint="use larger images or fewer modality_encoder filters",
                )
        self.convs = nn.ModuleList(convs)
        self.feature_shape = (in_channels, h, w)
        self.hidden = dense(in_channels * h * w, params.dense_units, init="he_normal")
        self.mu_head = dense(params.dense_units, params.z_dim)
        self.logvar_head = dense(params.dense_units, params.z_dim)

    @property
    def z_dim(self) -> int:
        return self.params.z_dim

    def forward(self, image: Tensor, anatomy: Tensor) -> ModalityOutput:
        if image.shape[-2:] != anatomy.shape[-2:] or image.shape[0] != anatomy.shape[0]:
            raise DafnetError(
                f"modality encoder: image {tuple(image.shape)} and anatomy {tuple(anatomy.shape)} "
                "differ in batch or spatial size"
            )
        slope = self.params.negative_slope
        x = torch.cat([anatomy, image], dim=1)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), slope)
        if tuple(x.shape[1:]) != self.feature_shape:
            raise DafnetError(
                f"modality encoder: built for images of size {self.facts.image_size}, got "
                f"{tuple(image.shape[-2:])}"
            )
        hidden = F.leaky_relu(self.hidden(x.flatten(1)), slope)
        mu, logvar = self.mu_head(hidden), self.logvar_head(hidden)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return ModalityOutput(z=z, mu=mu, logvar=logvar)
