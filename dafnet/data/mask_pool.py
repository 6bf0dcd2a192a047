"""The mask critic's real masks drawn from the labelled pool, as the original code draws them.

The original's critic step takes its real masks from a batch of its own, drawn from the labelled
data and augmented like any batch; they are not the masks of the slices whose predicted masks are
the fakes. :class:`LabelledMaskPool` gives every training sample of a
:class:`~dafnet.data.slices.PairedSliceDataset` one such mask (``pool_masks``, (L, H, W)): a slice
drawn uniformly at random from every labelled slice the dataset shows (any of its subjects, any
modality whose labels it does not hide), under its own random rotation (``rotation_degrees``) and
resampled as the critic's real masks are (bilinear soft channels, or nearest label maps one-hot).
Draws use torch's generator, so DataLoader worker seeding applies; nothing is drawn unless the pool
is on (``SampleConfig.real_mask_pool``), so runs without it keep their random stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from dafnet.data.augment import foreground_onehot, rigid_theta, uniform_draw, warp_labels, warp_soft_masks

if TYPE_CHECKING:
    from dafnet.data.slices import SampleConfig


class LabelledMaskPool:
    """Every labelled slice of a set of label stacks; :meth:`draw` returns one of them, moved at random."""

    def __init__(self, stacks: list[np.ndarray | Tensor], classes: int, rotation_degrees: float,
                 soft: bool) -> None:
        """``stacks``: (S, H, W) label maps, one per (subject, labelled modality); ``classes``: L + 1;
        ``soft``: resample the one-hot channels bilinearly (else the label maps, nearest)."""
        self.stacks = stacks
        self.classes, self.rotation_degrees, self.soft = classes, rotation_degrees, soft
        self.entries = [(i, s) for i, stack in enumerate(stacks) for s in range(stack.shape[0])]

    def __len__(self) -> int:
        return len(self.entries)

    def draw(self) -> Tensor:
        """One labelled slice chosen uniformly, rotated by its own angle: (L, H, W) float in [0, 1]."""
        stack, index = self.entries[int(torch.randint(0, len(self.entries), ()))]
        label = torch.as_tensor(self.stacks[stack][index]).long().unsqueeze(0)
        if self.rotation_degrees <= 0:
            return foreground_onehot(label, self.classes)[0]
        theta = rigid_theta(uniform_draw(self.rotation_degrees), *label.shape[-2:]).unsqueeze(0).to(label.device)
        if self.soft:
            return warp_soft_masks(label, theta, self.classes)[0]
        return foreground_onehot(warp_labels(label, theta), self.classes)[0]


def labelled_mask_pool(stacks: list[np.ndarray | Tensor], config: SampleConfig) -> LabelledMaskPool | None:
    """The pool of a :class:`~dafnet.data.slices.PairedSliceDataset`'s ``stacks``: the label stacks its
    samples show (:attr:`~dafnet.data.slices.PairedSliceDataset.shown_labels`, or the same held on a
    device), resampled as ``config`` says; None if there are none."""
    pool = LabelledMaskPool(stacks, config.real_mask_pool, config.rotation_degrees, soft=config.soft_mask_classes >= 2)
    return pool if len(pool) else None


__all__ = ["LabelledMaskPool", "labelled_mask_pool"]
