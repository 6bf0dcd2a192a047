"""DAFNet's loss terms (method.md 2), one registered ``LossTerm`` each (registry kind ``loss``).

Every term returns a scalar batch mean from ``forward``. Terms a method weights per sample
(ground truth present, pairing weights) also expose ``per_sample`` -> (B,) values.
Segmentation inputs follow the segmentor: channel 0 is the background, targets are
integer class maps (B, H, W) or one-hot maps (B, L + 1, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, LossTerm, Params


def one_hot_target(target: Tensor, num_channels: int) -> Tensor:
    """(B, H, W) class indices or (B, num_channels, H, W) one-hot -> float one-hot (B, num_channels, H, W)."""
    if target.ndim == 4:
        if target.shape[1] != num_channels:
            raise DafnetError(f"one-hot target has {target.shape[1]} channels, expected {num_channels}")
        return target.float()
    if target.ndim != 3:
        raise DafnetError(f"target must be (B, H, W) class indices or (B, C, H, W) one-hot, got {tuple(target.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_channels):
        raise DafnetError(
            f"target class indices must lie in 0..{num_channels - 1}, got {int(target.min())}..{int(target.max())}"
        )
    return F.one_hot(target.long(), num_channels).permute(0, 3, 1, 2).float()


def _check_spatial(prediction: Tensor, target: Tensor, who: str) -> None:
    if prediction.ndim != 4 or prediction.shape[0] != target.shape[0] or prediction.shape[-2:] != target.shape[-2:]:
        raise DafnetError(
            f"{who}: prediction {tuple(prediction.shape)} and target {tuple(target.shape)} do not match "
            "(expected (B, L + 1, H, W) and (B, H, W) or (B, L + 1, H, W))"
        )


def soft_dice_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per sample, 1 - soft Dice of two (B, ...) maps over all their channels and pixels; both empty: 1."""
    a, b = a.flatten(1), b.flatten(1)
    return 1 - 2 * (a * b).sum(1) / (a.sum(1) + b.sum(1)).clamp_min(1e-6)


class DiceLoss(LossTerm):
    """1 - soft Dice pooled over all foreground channels of a sample (channels 1..L), batch mean."""

    class Params(Params):
        smooth: float = Field(1e-12, gt=0, description="added to numerator and denominator (original code: 1e-12)")

    def per_sample(self, probabilities: Tensor, target: Tensor) -> Tensor:
        _check_spatial(probabilities, target, "dice loss")
        truth = one_hot_target(target, probabilities.shape[1])[:, 1:]
        pred = probabilities[:, 1:].float()  # sums in float32, also under autocast
        intersection = (pred * truth).sum(dim=(1, 2, 3))
        total = pred.sum(dim=(1, 2, 3)) + truth.sum(dim=(1, 2, 3))
        dice = (2 * intersection + self.params.smooth) / (total + self.params.smooth)
        return 1 - dice

    def forward(self, probabilities: Tensor, target: Tensor) -> Tensor:
        return self.per_sample(probabilities, target).mean()


class CrossEntropyLoss(LossTerm):
    """Pixel-wise cross-entropy over the L + 1 channels, from logits (``F.cross_entropy``), batch mean."""

    class Params(Params):
        pass

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_spatial(logits, target, "cross-entropy loss")
        if target.ndim == 4:  # one-hot or soft target: probabilities over channels
            losses = F.cross_entropy(logits.float(), target.float(), reduction="none")
        else:
            losses = F.cross_entropy(logits.float(), target.long(), reduction="none")
        return losses.flatten(1).mean(dim=1)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.per_sample(logits, target).mean()


class SupervisedLoss(LossTerm):
    """L_sup = (1 - Dice) + ce_weight * CE (paper Sec. III-C; the original used ce_weight 0.01)."""

    class Params(Params):
        ce_weight: float = Field(0.01, ge=0, description="weight of the cross-entropy next to 1 - Dice")
        smooth: float = Field(1e-12, gt=0, description="Dice smoothing")

    def __init__(self, params: SupervisedLoss.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        self.dice = DiceLoss(DiceLoss.Params(smooth=params.smooth), facts)
        self.cross_entropy = CrossEntropyLoss(CrossEntropyLoss.Params(), facts)

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        value = self.dice.per_sample(torch.softmax(logits, dim=1), target)
        if self.params.ce_weight > 0:
            value = value + self.params.ce_weight * self.cross_entropy.per_sample(logits, target)
        return value

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.per_sample(logits, target).mean()


class KLDivergenceLoss(LossTerm):
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over z dimensions, batch mean."""

    class Params(Params):
        pass

    def per_sample(self, mu: Tensor, logvar: Tensor) -> Tensor:
        if mu.shape != logvar.shape or mu.ndim != 2:
            raise DafnetError(f"kl loss: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must both be (B, n_z)")
        mu, logvar = mu.float(), logvar.float()
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)

    def forward(self, mu: Tensor, logvar: Tensor) -> Tensor:
        return self.per_sample(mu, logvar).mean()


class L1ReconstructionLoss(LossTerm):
    """Mean absolute error between an image and its reconstruction."""

    class Params(Params):
        pass

    def per_sample(self, prediction: Tensor, target: Tensor) -> Tensor:
        if prediction.shape != target.shape:
            raise DafnetError(f"l1 loss: prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
        return (prediction.float() - target.float()).abs().flatten(1).mean(dim=1)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self.per_sample(prediction, target).mean()


class LSGANGeneratorLoss(LossTerm):
    """Generator side of LS-GAN: mean (D(fake) - 1)^2."""

    class Params(Params):
        pass

    def forward(self, fake_scores: Tensor) -> Tensor:
        return (fake_scores.float() - 1).pow(2).mean()


class LSGANDiscriminatorLoss(LossTerm):
    """Discriminator side of LS-GAN: mean (D(real) - 1)^2 + mean D(fake)^2."""

    class Params(Params):
        pass

    def forward(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return (real_scores.float() - 1).pow(2).mean() + fake_scores.float().pow(2).mean()


class ZReconstructionLoss(LossTerm):
    """L_rec^z = mean |z_s - mu(Dec(s, z_s), s)| for z_s ~ N(0, I)."""

    class Params(Params):
        pass

    def forward(self, sampled_z: Tensor, reconstructed_z: Tensor) -> Tensor:
        if sampled_z.shape != reconstructed_z.shape:
            raise DafnetError(
                f"z reconstruction loss: {tuple(sampled_z.shape)} vs {tuple(reconstructed_z.shape)}"
            )
        return (sampled_z.float() - reconstructed_z.float()).abs().mean()


__all__ = [
    "CrossEntropyLoss",
    "DiceLoss",
    "KLDivergenceLoss",
    "L1ReconstructionLoss",
    "LSGANDiscriminatorLoss",
    "LSGANGeneratorLoss",
    "SupervisedLoss",
    "ZReconstructionLoss",
    "one_hot_target",
]
