"""Segmentor: anatomy factor -> mask over L + 1 channels (method.md 1.3)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from dafnet.components.keras_layers import ConvBlock, conv2d
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Params, SegmentationOutput, Segmentor


class ConvHeadSegmentor(Segmentor):
    """[3x3 conv -> BatchNorm -> ReLU] x 2 -> 1x1 conv to L + 1 channels, softmax (registry: conv_head)."""

    class Params(Params):
        filters: int = Field(64, ge=1, description="filters of the two 3x3 convolutions")

    def __init__(self, params: ConvHeadSegmentor.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        self.in_channels = facts.require("anatomy_channels")
        self.num_outputs = facts.require("num_classes") + 1  # channel 0 is the background
        self.features = ConvBlock(self.in_channels, params.filters)
        self.classifier = conv2d(params.filters, self.num_outputs, 1)  # Keras default init

    def forward(self, anatomy: Tensor) -> SegmentationOutput:
        if anatomy.ndim != 4 or anatomy.shape[1] != self.in_channels:
            raise DafnetError(
                f"segmentor: expected anatomy (B, {self.in_channels}, H, W), got {tuple(anatomy.shape)}"
            )
        logits = self.classifier(self.features(anatomy))
        return SegmentationOutput(probabilities=torch.softmax(logits, dim=1), logits=logits)
