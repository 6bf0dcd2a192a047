"""SPADE decoder (paper Fig. 3f, method.md 1.6): z is upsampled, the anatomy modulates every stage.

Stage sizes. With n blocks, block j (0-based) works at ceil(H / 2^(n-1-j)) x
ceil(W / 2^(n-1-j)); nearest interpolation moves between stages. With the paper's six
blocks at 192x192 this is 6/12/24/48/96/192 px, exactly the original's Dense start of
size/32 and x2 upsampling. For sides not divisible by 2^(n-1) (BOLD's 192x114) the
start is rounded up (114 -> 4, 8, 15, 29, 57, 114) and the last stage is exactly the
image size, so no crop or final resize is needed. (The original Keras code floored
the start size and could not build for such sides.)

Normalisation. The original's ``InstanceNormalization()`` (keras-contrib, ``axis=None``)
normalises each sample with ONE mean and ONE standard deviation over H, W and C together,
adds eps to the std, (x - mean) / (std + eps) with eps = 1e-3, no affine: ``norm: sample``
(the default). ``norm: channel`` is the usual per-channel instance norm (one mean and
variance per sample and channel, eps added to the variance).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dafnet.components.keras_layers import conv2d, dense
from dafnet.errors import DafnetError
from dafnet.interfaces import Decoder, Facts, Params

INSTANCE_NORM_EPS = 1e-3
"""keras_contrib InstanceNormalization default epsilon."""

Norm = Literal["sample", "channel"]


def sample_norm(x: Tensor, eps: float = INSTANCE_NORM_EPS) -> Tensor:
    """keras-contrib ``InstanceNormalization(axis=None)``: (x - mean) / (std + eps) with one mean
    and one (population) std per sample over all of C, H and W; computed in float32."""
    flat = x.float().flatten(1)
    mean = flat.mean(1).view(-1, *([1] * (x.ndim - 1)))
    std = flat.std(1, correction=0).view_as(mean)
    return ((x.float() - mean) / (std + eps)).to(x.dtype)


def normalise(x: Tensor, norm: Norm) -> Tensor:
    if norm == "sample":
        return sample_norm(x)
    return F.instance_norm(x, eps=INSTANCE_NORM_EPS)


class SPADE(nn.Module):
    """x -> Norm(x) * (1 + gamma(a)) + beta(a), a = ReLU(conv3x3(resize(s)))."""

    def __init__(self, channels: int, anatomy_channels: int, hidden: int, norm: Norm = "sample") -> None:
        super().__init__()
        self.norm = norm
        self.shared = conv2d(anatomy_channels, hidden, 3)
        self.gamma = conv2d(hidden, channels, 3)
        self.beta = conv2d(hidden, channels, 3)

    def forward(self, x: Tensor, anatomy: Tensor) -> Tensor:
        normalised = normalise(x, self.norm)
        s = F.interpolate(anatomy, size=x.shape[-2:], mode="nearest")
        a = F.relu(self.shared(s))
        return normalised * (1 + self.gamma(a)) + self.beta(a)


class SPADEBlock(nn.Module):
    """Residual of [SPADE, LReLU, conv3x3] x 2; a learned [SPADE, 1x1 conv] shortcut when widths differ."""

    def __init__(self, fin: int, fout: int, anatomy_channels: int, hidden: int, slope: float,
                 norm: Norm = "sample") -> None:
        super().__init__()
        middle = min(fin, fout)
        self.slope = slope
        self.spade1 = SPADE(fin, anatomy_channels, hidden, norm)
        self.conv1 = conv2d(fin, middle, 3)
        self.spade2 = SPADE(middle, anatomy_channels, hidden, norm)
        self.conv2 = conv2d(middle, fout, 3)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.shortcut_spade = SPADE(fin, anatomy_channels, hidden, norm)
            self.shortcut_conv = conv2d(fin, fout, 1, bias=False)

    def forward(self, x: Tensor, anatomy: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(self.spade1(x, anatomy), self.slope))
        h = self.conv2(F.leaky_relu(self.spade2(h, anatomy), self.slope))
        shortcut = self.shortcut_conv(self.shortcut_spade(x, anatomy)) if self.learned_shortcut else x
        return shortcut + h


class SPADEDecoder(Decoder):
    """Dense(z) -> SPADE blocks with nearest upsampling between -> 1x1 conv + tanh (registry: spade)."""

    class Params(Params):
        block_filters: tuple[int, ...] = Field(
            (128, 128, 128, 64, 32, 16),
            min_length=1,
            description="output width of each SPADE block; the Dense start map has block_filters[0] channels",
        )
        hidden_channels: int = Field(128, ge=1, description="width of each SPADE's shared conv on the anatomy")
        negative_slope: float = Field(0.2, ge=0, description="LeakyReLU slope inside the SPADE blocks")
        norm: Norm = Field("sample", description="sample: the original's keras-contrib instance norm, one mean "
                           "and std per sample over C, H, W, (x - mean) / (std + 1e-3); channel: per-channel "
                           "instance norm (eps 1e-3 on the variance)")

    def __init__(self, params: SPADEDecoder.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        if any(f < 1 for f in params.block_filters):
            raise DafnetError(f"SPADE decoder: block_filters must be >= 1, got {params.block_filters}")
        self.anatomy_channels = facts.require("anatomy_channels")
        self.z_dim = facts.require("z_dim")
        height, width = facts.require("image_size")
        n = len(params.block_filters)
        self.stage_sizes = [
            (math.ceil(height / 2 ** (n - 1 - j)), math.ceil(width / 2 ** (n - 1 - j))) for j in range(n)
        ]
        self.start_channels = params.block_filters[0]
        start_h, start_w = self.stage_sizes[0]
        self.start = dense(self.z_dim, start_h * start_w * self.start_channels)
        blocks, fin = [], self.start_channels
        for fout in params.block_filters:
            blocks.append(
                SPADEBlock(fin, fout, self.anatomy_channels, params.hidden_channels, params.negative_slope,
                           params.norm)
            )
            fin = fout
        self.blocks = nn.ModuleList(blocks)
        self.output_conv = conv2d(fin, facts.image_channels, 1, init="glorot_normal")

    def forward(self, anatomy: Tensor, z: Tensor) -> Tensor:
        if anatomy.ndim != 4 or anatomy.shape[1] != self.anatomy_channels:
            raise DafnetError(
                f"SPADE decoder: expected anatomy (B, {self.anatomy_channels}, H, W), got {tuple(anatomy.shape)}"
            )
        if tuple(anatomy.shape[-2:]) != self.stage_sizes[-1]:
            raise DafnetError(
                f"SPADE decoder: built for {self.stage_sizes[-1]} images, got anatomy {tuple(anatomy.shape)}"
            )
        if z.shape != (anatomy.shape[0], self.z_dim):
            raise DafnetError(f"SPADE decoder: expected z ({anatomy.shape[0]}, {self.z_dim}), got {tuple(z.shape)}")
        start_h, start_w = self.stage_sizes[0]
        x = self.start(z).view(z.shape[0], self.start_channels, start_h, start_w)
        for j, block in enumerate(self.blocks):
            if j > 0:
                x = F.interpolate(x, size=self.stage_sizes[j], mode="nearest")
            x = block(x, anatomy)
        return torch.tanh(self.output_conv(x))
