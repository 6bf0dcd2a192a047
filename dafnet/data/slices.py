"""Map-style datasets of paired 2D samples for multimodal training and evaluation.

A sample is one slice of the target modality with, for every modality (in the
recipe's order), k candidate slices paired by slice position (:mod:`dafnet.data.slice_pairing`;
the target's own row repeats its slice k times so every row has the same shape):

* ``images``   float32 (n, k, 1, H, W)
* ``masks``    int64   (n, k, H, W), zeros where there is no ground truth
* ``labelled`` bool    (n, k), whether ``masks`` holds ground truth
* ``present``  bool    (n,), whether the subject has that modality (always true in training)
* ``subject``  int64, index of the subject in the dataset's subject list; ``slice`` int64

Evaluation samples (``training=False``) of subjects whose volumes know the truth
(:attr:`~dafnet.interfaces.data.Volume.coordinates`, the phantom's) also carry

* ``coordinates``     float32 (n, k, 2, H, W), the anatomy coordinate (u, v) in mm each pixel
  shows, zeros where unknown
* ``has_coordinates`` bool    (n,), whether that modality's volume has them

(both keys present in every sample of the dataset as soon as one of its volumes has coordinates).

Training samples get one random rotation in +-degrees applied identically to every
image and mask of the sample (bilinear with border fill for images, nearest with
background fill for masks). With ``misalignment_degrees`` / ``misalignment_shift`` (a named
deviation, docs/method.md) every non-target modality also gets its own random rigid motion,
so the relative misalignment the aligner must undo differs in every sample.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from dafnet.data.slice_pairing import Pairing, draw_candidates
from dafnet.errors import DafnetError
from dafnet.interfaces.data import Subject


@dataclass(frozen=True)
class SampleConfig:
    """How samples are formed from subjects."""

    modalities: tuple[str, ...]
    target: str
    num_candidates: int = 1
    candidate_radius: int = 2
    pairing: Pairing = "expert"
    rotation_degrees: float = 0.0
    seed: int = 0
    """Seed of the fixed shuffled pairs of evaluation datasets."""
    misalignment_degrees: float = 0.0
    """Extra random rotation (+-degrees) of each non-target modality of a training sample."""
    misalignment_shift: float = 0.0
    """Extra random shift (+- fraction of the slice size, per axis) of each non-target modality."""
    soft_mask_classes: int = 0
    """L + 1 (> 1): training samples also carry ``soft_masks`` (n, k, L, H, W), the masks' one-hot
    foreground channels resampled bilinearly with the images (soft edges, as the original rotated
    its masks); 0: they do not."""

    def __post_init__(self) -> None:
        if self.target not in self.modalities:
            raise DafnetError(f"target {self.target!r} is not one of the modalities {self.modalities}")

    @property
    def target_index(self) -> int:
        return self.modalities.index(self.target)


def rigid_theta(degrees: float, height: int, width: int, shift: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """3x3 map from output to input normalised coordinates (``affine_grid``'s theta, plus a last
    row): a rotation by ``degrees`` about the image centre (a true rotation in pixel space, also
    for non-square images) after a shift of ``shift`` = (x, y) fractions of the slice size."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor([[cos, -sin * height / width, 2.0 * shift[0]],
                         [sin * width / height, cos, 2.0 * shift[1]],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def warp_sample(images: Tensor, masks: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Resample (N, 1, H, W) images (bilinear, border fill) and (N, H, W) masks (nearest,
    background fill) with per-row ``theta`` (N, 3, 3) from :func:`rigid_theta`."""
    grid = F.affine_grid(theta[:, :2].to(images.dtype), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    warped_masks = F.grid_sample(masks.unsqueeze(1).to(images.dtype), grid, mode="nearest",
                                 padding_mode="zeros", align_corners=False)
    return warped, warped_masks.squeeze(1).round().long()


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


def _uniform(limit: float) -> float:
    """One draw in [-limit, limit] from torch's generator (DataLoader worker seeding applies)."""
    return (2 * float(torch.rand(())) - 1) * limit


class PairedSliceDataset(Dataset):
    """Samples anchored at every target slice of the given subjects (see the module docstring)."""

    def __init__(self, subjects: list[Subject], config: SampleConfig, *, training: bool,
                 hide_target_labels: bool = False) -> None:
        self.config = config
        self.training = training
        self.hide_target_labels = hide_target_labels
        self.subjects: list[Subject] = []
        self.skipped: list[str] = []
        for subject in subjects:
            missing = [m for m in config.modalities if m not in subject.volumes]
            if config.target in missing or (training and missing):
                self.skipped.append(subject.id)
                continue
            self._check_shapes(subject)
            self.subjects.append(subject)
        if self.skipped and training:
            warnings.warn(f"training subjects without every modality {config.modalities} are left out: "
                          f"{self.skipped}", stacklevel=2)
        self.index: list[tuple[int, int]] = [
            (i, s) for i, subject in enumerate(self.subjects)
            for s in range(subject.volumes[config.target].num_slices)
        ]
        self._with_coordinates = not training and any(
            v.coordinates is not None for s in self.subjects for m, v in s.volumes.items() if m in config.modalities)
        self._fixed: dict[tuple[int, int], np.ndarray] = {}
        if not (training and config.pairing == "shuffled"):
            rng = np.random.default_rng(config.seed)
            for key in self.index:
                self._fixed[key] = self._candidates(*key, rng)

    def _check_shapes(self, subject: Subject) -> None:
        shapes = {m: v.image.shape[1:] for m, v in subject.volumes.items() if m in self.config.modalities}
        if len(set(shapes.values())) > 1:
            raise DafnetError(f"subject {subject.id!r}: slice sizes differ between modalities: {shapes}",
                              hint="the data source must return every modality at the networks' slice size")

    def __len__(self) -> int:
        return len(self.index)

    @property
    def subject_ids(self) -> list[str]:
        return [s.id for s in self.subjects]

    def _candidates(self, subject_index: int, slice_index: int, rng) -> np.ndarray:
        """(n, k) slice indices per modality (the target row repeats the anchor; -1 when absent)."""
        cfg, subject = self.config, self.subjects[subject_index]
        position = subject.volumes[cfg.target].slice_positions[slice_index]
        rows = []
        for modality in cfg.modalities:
            if modality == cfg.target:
                rows.append(np.full(cfg.num_candidates, slice_index))
            elif modality not in subject.volumes:
                rows.append(np.full(cfg.num_candidates, -1))
            else:
                rows.append(draw_candidates(position, subject.volumes[modality].slice_positions,
                                            cfg.num_candidates, cfg.candidate_radius, cfg.pairing, rng))
        return np.stack(rows).astype(np.int64)

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        cfg = self.config
        key = self.index[item]
        if key in self._fixed:
            chosen = self._fixed[key]
        else:  # seeded through torch, so DataLoader worker seeding applies
            chosen = self._candidates(*key, np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()))))
        subject = self.subjects[key[0]]
        height, width = subject.volumes[cfg.target].image.shape[1:]
        n, k = len(cfg.modalities), cfg.num_candidates
        images = np.zeros((n, k, 1, height, width), dtype=np.float32)
        masks = np.zeros((n, k, height, width), dtype=np.int64)
        labelled = np.zeros((n, k), dtype=bool)
        present = np.zeros(n, dtype=bool)
        for m, modality in enumerate(cfg.modalities):
            volume = subject.volumes.get(modality)
            if volume is None:
                continue
            present[m] = True
            images[m, :, 0] = volume.image[chosen[m]]
            hidden = self.hide_target_labels and modality == cfg.target
            if volume.label is not None and not hidden:
                masks[m] = volume.label[chosen[m]]
                labelled[m] = True
        images_t, masks_t = torch.from_numpy(images), torch.from_numpy(masks)
        soft = None
        if self.training:
            images_t, masks_t, soft = self._augment(images_t, masks_t)
        sample = {
            "images": images_t,
            "masks": masks_t,
            "labelled": torch.from_numpy(labelled),
            "present": torch.from_numpy(present),
            "subject": torch.tensor(key[0], dtype=torch.int64),
            "slice": torch.tensor(key[1], dtype=torch.int64),
        }
        if soft is not None:
            sample["soft_masks"] = soft
        if self._with_coordinates:
            sample.update(self._coordinates(subject, chosen))
        return sample

    def _coordinates(self, subject: Subject, chosen: np.ndarray) -> dict[str, Tensor]:
        """``coordinates`` (n, k, 2, H, W) and ``has_coordinates`` (n,) of the chosen slices."""
        cfg = self.config
        height, width = subject.volumes[cfg.target].image.shape[1:]
        coordinates = np.zeros((len(cfg.modalities), cfg.num_candidates, 2, height, width), dtype=np.float32)
        has = np.zeros(len(cfg.modalities), dtype=bool)
        for m, modality in enumerate(cfg.modalities):
            volume = subject.volumes.get(modality)
            if volume is not None and volume.coordinates is not None:
                coordinates[m] = volume.coordinates[chosen[m]]
                has[m] = True
        return {"coordinates": torch.from_numpy(coordinates), "has_coordinates": torch.from_numpy(has)}


    def _augment(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """One random rotation for the whole sample; with misalignment on, each non-target
        modality also gets its own random rigid motion (its k candidates share it). One
        resampling per image: the motions are composed. The third item: the soft masks
        (``soft_mask_classes``) or None."""
        cfg = self.config
        n, k, _, height, width = images.shape
        moves = cfg.rotation_degrees > 0 or cfg.misalignment_degrees > 0 or cfg.misalignment_shift > 0
        if not moves and cfg.soft_mask_classes < 2:
            return images, masks, None
        if not moves:  # soft masks only: no draw, so the random stream is that of a run without them
            return images, masks, foreground_onehot(masks, cfg.soft_mask_classes)
        common = rigid_theta(_uniform(cfg.rotation_degrees), height, width)
        thetas = []
        for m in range(n):
            theta = common
            if m != cfg.target_index and (cfg.misalignment_degrees > 0 or cfg.misalignment_shift > 0):
                shift = (_uniform(cfg.misalignment_shift), _uniform(cfg.misalignment_shift))
                theta = common @ rigid_theta(_uniform(cfg.misalignment_degrees), height, width, shift)
            thetas.append(theta.expand(k, 3, 3))
        theta, flat_masks = torch.cat(thetas), masks.view(n * k, height, width)
        soft = None
        if cfg.soft_mask_classes >= 2:
            soft = warp_soft_masks(flat_masks, theta, cfg.soft_mask_classes)
            soft = soft.view(n, k, cfg.soft_mask_classes - 1, height, width)
        flat_images, flat_masks = warp_sample(images.view(n * k, 1, height, width), flat_masks, theta)
        return flat_images.view_as(images), flat_masks.view_as(masks), soft


def training_streams(subjects: list[Subject], config: SampleConfig,
                     annotated_ids) -> dict[str, PairedSliceDataset]:
    """``labelled``: subjects in ``annotated_ids`` with target masks; ``unlabelled``: the others,
    their target masks hidden (other modalities keep theirs)."""
    annotated = {str(i) for i in annotated_ids}
    target = config.target

    def has_target_label(s: Subject) -> bool:
        return target in s.volumes and s.volumes[target].label is not None

    labelled = [s for s in subjects if str(s.id) in annotated and has_target_label(s)]
    unlabelled = [s for s in subjects if not (str(s.id) in annotated and has_target_label(s))]
    return {
        "labelled": PairedSliceDataset(labelled, config, training=True),
        "unlabelled": PairedSliceDataset(unlabelled, config, training=True, hide_target_labels=True),
    }


__all__ = ["PairedSliceDataset", "SampleConfig", "rigid_theta", "rotate_sample", "training_streams", "warp_sample",
           "warp_soft_masks"]
