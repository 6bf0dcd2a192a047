"""A plain 2D U-Net baseline (registry: unet): the paper's UNet-single and UNet-multi (Sec. IV-C).

The network has the anatomy encoder's layout (conv blocks of base_filters * 2^i, max-pooling,
bottleneck, nearest-upsampling stages with skips; Keras BatchNorm and initialisers from
:mod:`dafnet.components.keras_layers`) with one contracting path and a softmax head over L + 1 classes.
It trains with L_sup = (1 - Dice) + 0.01 CE on single slices:

* ``mode: single``: slices of one modality (``train_on``, default the target);
* ``mode: multi``: slices of every modality mixed into one dataset.

Target masks of unannotated subjects (``data.annotation_fraction``) are hidden; other modalities'
masks are always used. Evaluation predicts the target slices (``single``) with DAFNet's Dice summary.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dafnet.components.anatomy import ContractingPath, UpStage
from dafnet.components.keras_layers import ConvBlock, conv2d, count_trainable
from dafnet.data.augment import warp_batch
from dafnet.errors import DafnetError
from dafnet.interfaces import (
    Facts,
    HealthSignals,
    LossOutput,
    Method,
    MethodContext,
    Params,
    Phase,
    ResultTable,
    RoleSummary,
)
from dafnet.losses import SupervisedLoss
from dafnet.methods.slice_streams import evaluation_dataset, require_labelled, single_modality_streams
from dafnet.methods.target_evaluation import (
    dice_statistics,
    dice_summary,
    dice_table,
    evaluating,
    metric_inputs,
    target_health_signals,
)


class UNet2D(nn.Module):
    """Contracting path, bottleneck, expanding path with skips, 1x1 conv to ``out_channels`` logits."""

    def __init__(self, in_channels: int, out_channels: int, base_filters: int, depth: int) -> None:
        super().__init__()
        widths = [base_filters * 2**i for i in range(depth)]
        self.contracting = ContractingPath(in_channels, widths)
        self.bottleneck = ConvBlock(widths[-1], base_filters * 2**depth)
        previous, stages = base_filters * 2**depth, []
        for w in reversed(widths):
            stages.append(UpStage(previous, w))
            previous = w
        self.expanding = nn.ModuleList(stages)
        self.output_conv = conv2d(widths[0], out_channels, 1)
        self.factor = 2**depth

    def forward(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        pad_h, pad_w = (-height) % self.factor, (-width) % self.factor
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            image = F.pad(image, (left, pad_w - left, top, pad_h - top), value=-1.0)
        x, skips = self.contracting(image)
        x = self.bottleneck(x)
        for stage, skip in zip(self.expanding, reversed(skips)):
            x = stage(x, skip)
        logits = self.output_conv(x)
        return logits[..., top:top + height, left:left + width]


class UNet(Method):
    """Supervised 2D U-Net on single slices; single- or multi-modality training (registry: unet)."""

    prediction_types = ("single",)
    roles = {}
    loss_weights = {"sup": 1.0}

    class Params(Params):
        mode: Literal["single", "multi"] = Field(
            "single", description="single: train on one modality (train_on); multi: all modalities mixed")
        train_on: str | None = Field(
            None, description="mode single: the modality to train on (default: the target); a source "
            "modality gives a model trained on the source and evaluated on the target")
        base_filters: int = Field(64, ge=1, description="filters of the first conv block (level i: base * 2^i)")
        depth: int = Field(4, ge=1, le=8, description="max-pool steps; inputs are padded to multiples of 2^depth")
        ce_weight: float = Field(0.01, ge=0, description="cross-entropy weight inside L_sup = (1 - Dice) + w CE")
        dice_smooth: float = Field(1e-12, gt=0, description="smoothing of the soft Dice in L_sup")

    def __init__(self, params: UNet.Params, facts: Facts, context: MethodContext | None = None) -> None:
        super().__init__(params, facts, context)
        self.modalities = tuple(facts.require("modalities"))
        self.target = self.target_modality(self.modalities)
        self.target_index = self.modalities.index(self.target)
        if params.train_on is not None:
            if params.mode == "multi":
                raise DafnetError("unet: train_on only applies to mode single",
                                  hint="drop method.params.train_on or use mode: single")
            if params.train_on not in self.modalities:
                raise DafnetError(f"unet: train_on {params.train_on!r} is not one of {self.modalities}")
        self.train_modalities = (self.modalities if params.mode == "multi"
                                 else (params.train_on or self.target,))
        self.num_classes = facts.require("num_classes")
        self.weights = self.resolved_weights()
        self.unet = UNet2D(facts.image_channels, self.num_classes + 1, params.base_filters, params.depth)
        self.supervised = SupervisedLoss(SupervisedLoss.Params(ce_weight=params.ce_weight,
                                                               smooth=params.dice_smooth), facts)

    # ------------------------------------------------------------------ engine contract
    def networks(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def optimizer_groups(self) -> dict[str, list[str]]:
        return {"unet": ["unet"]}

    def phases(self) -> list[Phase]:
        return [Phase("labelled/unet", "unet", "labelled", self.step)]

    def health_signals(self) -> HealthSignals:
        return target_health_signals(self.context, self.target, self.train_modalities, ("labelled/unet/sup",))

    def summary(self) -> list[RoleSummary]:
        h, w = self.facts.require("image_size")
        p = next(self.parameters())
        with evaluating(self):
            out = self.unet(torch.zeros(1, self.facts.image_channels, h, w, device=p.device, dtype=p.dtype))
        return [RoleSummary("unet", f"unet ({self.params.mode})", "x".join(map(str, out.shape)),
                            count_trainable(self.unet))]

    def step(self, batch: dict, scratch: dict) -> LossOutput:
        x, y, has = batch["images"][:, 0, 0], batch["masks"][:, 0, 0], batch["labelled"][:, 0, 0]
        logits = self.unet(x[has])
        sup = self.supervised.per_sample(logits, y[has]).mean()
        return LossOutput(total=self.weights["sup"] * sup, terms={"sup": sup.detach()})

    # ------------------------------------------------------------------ data
    def train_streams(self, subjects: list) -> dict:
        streams = single_modality_streams(subjects, self.context, self.train_modalities, self.target)
        require_labelled("unet", streams, self.train_modalities, self.target)
        return {"labelled": streams["labelled"]}

    def on_device(self, batch, stream: str):
        """``data.augment.warp: batch``: the batch's drawn rotations applied on the device."""
        return warp_batch(batch)

    def eval_dataset(self, subjects: list):
        return evaluation_dataset(subjects, self.context, self.modalities, self.target)

    # ------------------------------------------------------------------ evaluation
    def predict_slices(self, images: Tensor) -> Tensor:
        """(B, 1, H, W) -> class probabilities (B, L + 1, H, W)."""
        return torch.softmax(self.unet(images), dim=1)

    def evaluation_step(self, batch) -> dict[str, Tensor]:
        with evaluating(self):
            prediction = self.predict_slices(batch["images"][:, self.target_index, 0])
        return dice_statistics({"single": prediction}, batch, self.target_index)

    def evaluation_summary(self, stats: dict[str, Tensor]) -> dict[str, float]:
        return dice_summary(stats, "single")

    def result_table(self, summary: dict[str, float]) -> ResultTable | None:
        trained = ", ".join(self.train_modalities)
        return dice_table(summary, self.target, ("single",),
                             f"single: U-Net({self.target}), trained on {trained} ({self.params.mode})")

    def evaluation_inputs(self, batch) -> list:
        with evaluating(self):
            prediction = self.predict_slices(batch["images"][:, self.target_index, 0])
        return metric_inputs({"single": prediction}, batch, self.target_index, self.target)

