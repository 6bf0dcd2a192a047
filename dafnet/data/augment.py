"""The training augmentation of paired slices: rigid motions drawn per sample, applied by one resampling.

Every training sample gets one random rotation shared by all its images and masks; with
misalignment on, each non-target modality also gets its own random rigid motion (its k candidates
share it), composed with the shared one (:func:`draw_thetas`). The motions are applied by
:func:`warp_slices`: images bilinear with border fill, label maps nearest with background fill, and
the soft masks of the mask critic (one-hot foreground channels) bilinear with zero fill.

Where that resampling runs is ``data.augment.warp``:

* ``sample``: :class:`~dafnet.data.slices.PairedSliceDataset` warps each sample as it is loaded
  (on the CPU, in the DataLoader's workers);
* ``batch``: the dataset draws the same motions in the same order (the same random stream), but
  returns the slices unwarped with the motions under :data:`THETA_KEY`; :func:`warp_batch` applies
  them to a collated batch at once, where the batch is (the training device: the method calls it
  from its ``on_device`` hook).

Both call :func:`warp_slices`, so a seeded run draws and applies the same augmentation either way
(equal to float tolerance: the batched resampling may round differently).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from dafnet.data.slices import SampleConfig

THETA_KEY = "augment_theta"
"""Key of a ``batch``-warp training sample's motions: float32 (n, k, 3, 3), one :func:`rigid_theta`
(composed) per image, in the order of ``images``; :func:`warp_batch` consumes it."""


def rigid_theta(degrees: float, height: int, width: int, shift: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """3x3 map from output to input normalised coordinates (``affine_grid``'s theta, plus a last
    row): a rotation by ``degrees`` about the image centre (a true rotation in pixel space, also
    for non-square images) after a shift of ``shift`` = (x, y) fractions of the slice size."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor([[cos, -sin * height / width, 2.0 * shift[0]],
                         [sin * width / height, cos, 2.0 * shift[1]],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def _sample_labels(masks: Tensor, grid: Tensor) -> Tensor:
    warped = F.grid_sample(masks.unsqueeze(1).to(grid.dtype), grid, mode="nearest", padding_mode="zeros",
                           align_corners=False)
    return warped.squeeze(1).round().long()


def warp_labels(masks: Tensor, theta: Tensor) -> Tensor:
    """Resample (N, H, W) label maps (nearest, background fill) with per-row ``theta`` (N, 3, 3)."""
    shape = [masks.shape[0], 1, *masks.shape[-2:]]
    return _sample_labels(masks, F.affine_grid(theta[:, :2].float(), shape, align_corners=False))


def _image_grid(images: Tensor, theta: Tensor) -> Tensor:
    return F.affine_grid(theta[:, :2].to(images.dtype), list(images.shape), align_corners=False)


def _sample_images(images: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def warp_images(images: Tensor, theta: Tensor) -> Tensor:
    """Resample (N, C, H, W) images (bilinear, border fill) with per-row ``theta`` (N, 3, 3), as
    :func:`warp_sample` does its images, for a caller with no masks to move."""
    return _sample_images(images, _image_grid(images, theta))


def warp_sample(images: Tensor, masks: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Resample (N, 1, H, W) images (bilinear, border fill, as :func:`warp_images`) and (N, H, W) masks
    (nearest, background fill, as :func:`warp_labels`) with per-row ``theta`` (N, 3, 3) from :func:`rigid_theta`."""
    grid = _image_grid(images, theta)
    return _sample_images(images, grid), _sample_labels(masks, grid)


def foreground_onehot(masks: Tensor, classes: int) -> Tensor:
    """(..., H, W) label maps -> (..., classes - 1, H, W) float one-hot foreground channels."""
    onehot = F.one_hot(masks.clamp(0, classes - 1), classes).movedim(-1, -3)
    return onehot[..., 1:, :, :].float()


def warp_soft_masks(masks: Tensor, theta: Tensor, classes: int) -> Tensor:
    """(N, H, W) label maps -> (N, classes - 1, H, W) foreground one-hot channels resampled
    bilinearly (zero fill) with the rows of ``theta`` (N, 3, 3); values in [0, 1]."""
    onehot = foreground_onehot(masks, classes)
    grid = F.affine_grid(theta[:, :2].float(), list(onehot.shape), align_corners=False)
    return F.grid_sample(onehot, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate_sample(images: Tensor, masks: Tensor, degrees: float) -> tuple[Tensor, Tensor]:
    """Rotate (N, 1, H, W) images and (N, H, W) masks by one angle about the image centre."""
    height, width = images.shape[-2:]
    theta = rigid_theta(degrees, height, width).expand(images.shape[0], 3, 3)
    return warp_sample(images, masks, theta)


def warp_slices(images: Tensor, masks: Tensor, theta: Tensor,
                soft_mask_classes: int = 0) -> tuple[Tensor, Tensor, Tensor | None]:
    """The augmentation's one resampling of (N, 1, H, W) images and (N, H, W) label maps with
    ``theta`` (N, 3, 3): (images, masks, soft masks (N, classes - 1, H, W) from the unwarped label
    maps, or None when ``soft_mask_classes`` < 2). Per sample and per batch alike."""
    soft = warp_soft_masks(masks, theta, soft_mask_classes) if soft_mask_classes >= 2 else None
    warped, warped_masks = warp_sample(images, masks, theta)
    return warped, warped_masks, soft


def moves(config: SampleConfig) -> bool:
    """Whether training samples of ``config`` are moved at all (else nothing is drawn)."""
    return config.rotation_degrees > 0 or config.misalignment_degrees > 0 or config.misalignment_shift > 0


def uniform_draw(limit: float) -> float:
    """One draw in [-limit, limit] from torch's generator (DataLoader worker seeding applies)."""
    return (2 * float(torch.rand(())) - 1) * limit


def draw_thetas(config: SampleConfig, n: int, k: int, height: int, width: int) -> Tensor:
    """The motions of one training sample, (n, k, 3, 3) float64: the common rotation, then for every
    non-target modality in order (misalignment on) its shift (x, y) and rotation, composed after it."""
    common = rigid_theta(uniform_draw(config.rotation_degrees), height, width)
    misaligned = config.misalignment_degrees > 0 or config.misalignment_shift > 0
    thetas = []
    for m in range(n):
        theta = common
        if m != config.target_index and misaligned:
            shift = (uniform_draw(config.misalignment_shift), uniform_draw(config.misalignment_shift))
            theta = common @ rigid_theta(uniform_draw(config.misalignment_degrees), height, width, shift)
        thetas.append(theta.expand(k, 3, 3))
    return torch.stack(thetas)


@torch.no_grad()
def warp_batch(batch: dict, soft_mask_classes: int = 0) -> dict:
    """A collated ``batch``-warp training batch (``images`` (B, n, k, 1, H, W), ``masks`` (B, n, k, H, W)
    and :data:`THETA_KEY` (B, n, k, 3, 3)) warped where it is, in one resampling per tensor kind:
    the batch as the ``sample`` path would have given it (``soft_masks`` (B, n, k, classes - 1, H, W)
    added when ``soft_mask_classes`` >= 2; :data:`THETA_KEY` removed). A batch without
    :data:`THETA_KEY` (``sample`` warp, or nothing moved) is returned as it is."""
    if THETA_KEY not in batch:
        return batch
    out = dict(batch)
    theta = out.pop(THETA_KEY)
    images, masks = out["images"], out["masks"]
    height, width = images.shape[-2:]
    rows = masks.numel() // (height * width)
    warped, warped_masks, soft = warp_slices(images.reshape(rows, 1, height, width),
                                             masks.reshape(rows, height, width),
                                             theta.reshape(rows, 3, 3).to(images.device), soft_mask_classes)
    out["images"], out["masks"] = warped.view_as(images), warped_masks.view_as(masks)
    if soft is not None:
        out["soft_masks"] = soft.view(*masks.shape[:-2], soft_mask_classes - 1, height, width)
    return out


__all__ = ["THETA_KEY", "draw_thetas", "foreground_onehot", "moves", "rigid_theta", "rotate_sample", "uniform_draw",
           "warp_batch", "warp_labels", "warp_sample", "warp_slices", "warp_soft_masks"]
