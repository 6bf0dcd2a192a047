"""Loss terms against hand computations (method.md 2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, LossTerm
from dafnet.losses import (
    CrossEntropyLoss,
    DiceLoss,
    KLDivergenceLoss,
    L1ReconstructionLoss,
    LSGANDiscriminatorLoss,
    LSGANGeneratorLoss,
    SupervisedLoss,
    ZReconstructionLoss,
)
from dafnet.registry import registry

FACTS = Facts(num_classes=2)


def make(cls, **params):
    return cls(cls.Params(**params), FACTS)


def test_every_loss_is_registered_as_a_loss_term():
    names = {"dice", "cross_entropy", "supervised", "kl", "l1", "lsgan_generator", "lsgan_discriminator",
             "z_reconstruction"}
    for name in names:
        cls = registry("loss").get(name)
        assert issubclass(cls, LossTerm)
        assert cls.Params.model_config["extra"] == "forbid"


def test_dice_pools_all_foreground_channels_of_a_sample():
    # 1 sample, 3 channels (background + 2 classes), 1 x 4 pixels.
    target = torch.tensor([[[0, 1, 2, 2]]])
    probs = torch.tensor([[[[0.5, 0.0, 0.2, 0.1]],   # background
                           [[0.5, 0.6, 0.3, 0.0]],   # class 1
                           [[0.0, 0.4, 0.5, 0.9]]]])  # class 2
    # Foreground truth: class 1 at pixel 1, class 2 at pixels 2, 3.
    intersection = 0.6 + 0.5 + 0.9
    total = (0.5 + 0.6 + 0.3 + 0.0 + 0.0 + 0.4 + 0.5 + 0.9) + 3
    expected = 1 - 2 * intersection / total
    loss = make(DiceLoss)(probs, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Not the mean of per-class Dice:
    per_class = [2 * 0.6 / (1.4 + 1), 2 * 1.4 / (1.8 + 2)]
    assert loss.item() != pytest.approx(1 - sum(per_class) / 2, rel=1e-3)


def test_dice_averages_samples_and_accepts_one_hot_targets():
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 5, 5)
    probs = logits.softmax(1)
    target = torch.randint(0, 3, (3, 5, 5))
    dice = make(DiceLoss)
    per_sample = torch.stack([dice(probs[i:i + 1], target[i:i + 1]) for i in range(3)])
    assert dice(probs, target).item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    one_hot = F.one_hot(target, 3).permute(0, 3, 1, 2)
    assert dice(probs, one_hot).item() == pytest.approx(dice(probs, target).item(), rel=1e-6)


def test_dice_of_perfect_prediction_and_of_empty_masks():
    target = torch.tensor([[[0, 1], [2, 0]]])
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert make(DiceLoss)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    background = F.one_hot(empty, 3).permute(0, 3, 1, 2).float()
    assert make(DiceLoss)(background, empty).item() == pytest.approx(0.0, abs=1e-6)


def test_cross_entropy_is_torch_cross_entropy_on_logits_with_the_right_argument_order():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    ce = make(CrossEntropyLoss)(logits, target)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    # By hand: -log softmax at the true class, averaged over pixels.
    log_p = logits.log_softmax(1)
    by_hand = -log_p.gather(1, target.unsqueeze(1)).mean()
    assert ce.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_supervised_is_one_minus_dice_plus_weighted_cross_entropy():
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 6, 6))
    dice = make(DiceLoss)(logits.softmax(1), target)
    ce = F.cross_entropy(logits, target)
    assert make(SupervisedLoss)(logits, target).item() == pytest.approx((dice + 0.01 * ce).item(), rel=1e-6)
    assert make(SupervisedLoss, ce_weight=0.5)(logits, target).item() == pytest.approx((dice + 0.5 * ce).item(),
                                                                                       rel=1e-6)
    make(SupervisedLoss)(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_kl_closed_form_summed_over_dimensions_batch_mean():
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    # KL(N(m, v) || N(0, 1)) = 0.5 (v + m^2 - 1 - log v) per dimension.
    kl = lambda m, v: 0.5 * (v + m * m - 1 - math.log(v))  # noqa: E731
    expected = ((kl(0, 1) + kl(1, 4)) + (kl(2, 1) + kl(-1, 1))) / 2
    assert make(KLDivergenceLoss)(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert make(KLDivergenceLoss)(torch.zeros(3, 8), torch.zeros(3, 8)).item() == 0.0


def test_l1_and_z_reconstruction_are_mean_absolute_errors():
    a, b = torch.tensor([[1.0, -1.0], [0.5, 0.0]]), torch.tensor([[0.0, 1.0], [0.5, 1.0]])
    assert make(L1ReconstructionLoss)(a, b).item() == pytest.approx((1 + 2 + 0 + 1) / 4)
    assert make(ZReconstructionLoss)(a, b).item() == pytest.approx((1 + 2 + 0 + 1) / 4)
    with pytest.raises(DafnetError):
        make(L1ReconstructionLoss)(a, b[:1])


def test_lsgan_generator_and_discriminator_sides():
    real = torch.tensor([[1.0], [0.5]])
    fake = torch.tensor([[0.0], [2.0], [1.0]])
    assert make(LSGANGeneratorLoss)(fake).item() == pytest.approx((1 + 1 + 0) / 3)
    expected = (0 + 0.25) / 2 + (0 + 4 + 1) / 3
    assert make(LSGANDiscriminatorLoss)(real, fake).item() == pytest.approx(expected)


def test_bad_targets_are_clear_errors():
    probs = torch.rand(1, 3, 4, 4)
    with pytest.raises(DafnetError, match="class indices"):
        make(DiceLoss)(probs, torch.full((1, 4, 4), 5))
    with pytest.raises(DafnetError, match="do not match"):
        make(DiceLoss)(probs, torch.zeros(1, 5, 5, dtype=torch.long))
