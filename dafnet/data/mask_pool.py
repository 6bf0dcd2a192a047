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

from dafnet.data.augment import foreground_onehot, rigid_theta, uniform_draw, warp_sample, warp_soft_masks

if TYPE_CHECKING:
    from dafnet.data.slices import SampleConfig
    from dafnet.interfaces.data import Subject


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
        image = torch.zeros(1, 1, *label.shape[-2:], device=label.device)
        return foreground_onehot(warp_sample(image, label, theta)[1], self.classes)[0]


def labelled_mask_pool(subjects: list[Subject], config: SampleConfig, hide_target_labels: bool,
                       held: dict | None = None) -> LabelledMaskPool | None:
    """The pool of a :class:`~dafnet.data.slices.PairedSliceDataset`'s ``subjects`` (its hidden target labels
    left out; ``held``: its slices held on a device, already without them), or None if it has no labels."""
    if held is not None:
        stacks = [label for _, label in held.values() if label is not None]
    else:
        hidden = config.target if hide_target_labels else None
        stacks = [s.volumes[m].label for s in subjects for m in config.modalities
                  if m in s.volumes and s.volumes[m].label is not None and m != hidden]
    pool = LabelledMaskPool(stacks, config.real_mask_pool, config.rotation_degrees, soft=config.soft_mask_classes >= 2)
    return pool if len(pool) else None


__all__ = ["LabelledMaskPool", "labelled_mask_pool"]
