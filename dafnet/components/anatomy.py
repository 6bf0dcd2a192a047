"""Anatomy encoder: U-Nets with per-modality contracting paths and one shared expanding path.

method.md 1.1. For modality i, s_i = round(softmax(U-Net_i(x_i))) with a straight-through
gradient. The contracting path (conv blocks + max-pooling) has its own weights per
modality; the bottleneck, every up stage and the final 1x1 conv, including their
BatchNorms, are one set of modules used by all modalities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dafnet.components.keras_layers import ConvBlock, batch_norm, conv2d
from dafnet.errors import DafnetError
from dafnet.interfaces import AnatomyEncoder, AnatomyOutput, Facts, Params


def straight_through_round(probabilities: Tensor) -> Tensor:
    """Round in the forward pass (1 where p > 0.5), identity gradient in the backward pass."""
    return probabilities + (torch.round(probabilities) - probabilities).detach()


class UpStage(nn.Module):
    """Nearest x2 upsample -> 3x3 conv -> BatchNorm (no activation) -> concat skip -> conv block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up_conv = conv2d(in_channels, out_channels, 3, init="he_normal")
        self.up_norm = batch_norm(out_channels)
        self.block = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.up_norm(self.up_conv(x))
        return self.block(torch.cat([x, skip], dim=1))


class ContractingPath(nn.Module):
    """One modality's conv blocks; returns the bottom feature map and the skips (top first)."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        blocks = []
        for width in widths:
            blocks.append(ConvBlock(in_channels, width))
            in_channels = width
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return x, skips


class UNetSharedDecoderEncoder(AnatomyEncoder):
    """One U-Net per modality sharing bottleneck, expanding path and output conv (registry: unet_shared_decoder)."""

    class Params(Params):
        channels: int = Field(8, ge=1, description="C, anatomy channels (softmax outputs)")
        base_filters: int = Field(
            64, ge=1, description="filters of the first conv block; level i has base * 2^i, bottleneck base * 2^depth"
        )
        depth: int = Field(4, ge=1, le=8, description="number of max-pool steps (image sides must divide by 2^depth)")
        binarise: bool = Field(
            True, description="straight-through rounding of the softmax (the paper); False keeps it soft"
        )
        pad_to_multiple: bool = Field(
            False,
            description="pad inputs (with -1, the background) to multiples of 2^depth and crop the output "
            "back, so sizes such as BOLD's 192x114 work; off in the paper configuration",
        )

    def __init__(self, params: UNetSharedDecoderEncoder.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        height, width = facts.require("image_size")
        factor = 2**params.depth
        if (height % factor or width % factor) and not params.pad_to_multiple:
            raise DafnetError(
                f"anatomy encoder: image size {height}x{width} is not divisible by 2^depth = {factor}",
                hint=f"crop or pad the images to multiples of {factor}, set anatomy_encoder "
                "params.pad_to_multiple: true, or lower its depth",
            )
        self.num_modalities = facts.num_modalities
        in_channels = facts.image_channels
        widths = [params.base_filters * 2**i for i in range(params.depth)]
        bottom = params.base_filters * 2**params.depth

        self.contracting = nn.ModuleList(
            ContractingPath(in_channels, widths) for _ in range(self.num_modalities)
        )
        # Shared by every modality:
        self.bottleneck = ConvBlock(widths[-1], bottom)
        stages, previous = [], bottom
        for w in reversed(widths):
            stages.append(UpStage(previous, w))
            previous = w
        self.expanding = nn.ModuleList(stages)
        self.output_conv = conv2d(widths[0], params.channels, 1)  # Keras default init (glorot_uniform)

    @property
    def out_channels(self) -> int:
        return self.params.channels

    def shared_modules(self) -> nn.ModuleDict:
        """The modules used by every modality (bottleneck, expanding path, output conv)."""
        return nn.ModuleDict(
            {"bottleneck": self.bottleneck, "expanding": self.expanding, "output_conv": self.output_conv}
        )

    def forward(self, image: Tensor, modality: int) -> AnatomyOutput:
        if not 0 <= int(modality) < self.num_modalities:
            raise DafnetError(
                f"anatomy encoder: modality index {modality} out of range 0..{self.num_modalities - 1}",
                hint=f"modalities are {self.facts.modalities}",
            )
        factor = 2**self.params.depth
        height, width = image.shape[-2:] if image.ndim == 4 else (0, 0)
        pad_h, pad_w = (-height) % factor, (-width) % factor
        if image.ndim != 4 or ((pad_h or pad_w) and not self.params.pad_to_multiple):
            raise DafnetError(
                f"anatomy encoder: expected images (B, {self.facts.image_channels}, H, W) with H, W "
                f"divisible by {factor}, got {tuple(image.shape)}"
            )
        if pad_h or pad_w:
            top, left = pad_h // 2, pad_w // 2
            image = F.pad(image, (left, pad_w - left, top, pad_h - top), value=-1.0)
        x, skips = self.contracting[int(modality)](image)
        x = self.bottleneck(x)
        for stage, skip in zip(self.expanding, reversed(skips)):
            x = stage(x, skip)
        logits = self.output_conv(x)
        if pad_h or pad_w:
            logits = logits[..., top : top + height, left : left + width]
        probabilities = torch.softmax(logits, dim=1)
        anatomy = straight_through_round(probabilities) if self.params.binarise else probabilities
        return AnatomyOutput(anatomy=anatomy, probabilities=probabilities)
