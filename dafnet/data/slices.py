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

Training samples are augmented (:mod:`dafnet.data.augment`): one random rotation in +-degrees
applied identically to every image and mask of the sample (bilinear with border fill for images,
nearest with background fill for masks). With ``misalignment_degrees`` / ``misalignment_shift`` (a
named deviation, docs/method.md) every non-target modality also gets its own random rigid motion,
so the relative misalignment the aligner must undo differs in every sample. With ``warp="batch"``
a sample that moves is returned unwarped, with its drawn motions under
:data:`~dafnet.data.augment.THETA_KEY`, for :func:`~dafnet.data.augment.warp_batch`.

A training dataset built with ``device=`` holds its subjects' slices as tensors on that device
(``data.slices_on_device``): a sample is then gathered there, with no copy from host memory.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dafnet.data.augment import (
    THETA_KEY,
    draw_thetas,
    foreground_onehot,
    moves,
    rigid_theta,
    rotate_sample,
    warp_sample,
    warp_slices,
    warp_soft_masks,
)
from dafnet.data.mask_pool import labelled_mask_pool
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
    real_mask_pool: int = 0
    """L + 1 (> 1): training samples also carry ``pool_masks`` (L, H, W), one labelled slice of the
    dataset drawn at random (:mod:`dafnet.data.mask_pool`; soft edges when ``soft_mask_classes`` is set)."""
    warp: Literal["sample", "batch"] = "sample"
    """Where a training sample's motions are applied (``data.augment.warp``): ``sample``, in the
    dataset; ``batch``, later, to the collated batch (:func:`~dafnet.data.augment.warp_batch`): the
    sample carries them unwarped (the same draws)."""

    def __post_init__(self) -> None:
        if self.target not in self.modalities:
            raise DafnetError(f"target {self.target!r} is not one of the modalities {self.modalities}")

    @property
    def target_index(self) -> int:
        return self.modalities.index(self.target)


class PairedSliceDataset(Dataset):
    """Samples anchored at every target slice of the given subjects (see the module docstring)."""

    def __init__(self, subjects: list[Subject], config: SampleConfig, *, training: bool,
                 hide_target_labels: bool = False, device: torch.device | str | None = None) -> None:
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
        self.shown_labels = self._shown_labels()
        self.device = None if device is None else torch.device(device)
        self._held = None if device is None else self._hold(self.device)
        stacks = [self._held[key][1] for key in self.shown_labels] if self._held else list(self.shown_labels.values())
        self.pool = labelled_mask_pool(stacks, config) if training and config.real_mask_pool >= 2 else None

    def _shown_labels(self) -> dict[tuple[int, str], np.ndarray]:
        """(subject index, modality) -> the label stack samples show: every modality's labels but the
        target's when this dataset hides them (the one place that rule is applied)."""
        hidden = self.config.target if self.hide_target_labels else None
        return {(i, m): s.volumes[m].label for i, s in enumerate(self.subjects) for m in self.config.modalities
                if m != hidden and m in s.volumes and s.volumes[m].label is not None}

    def _hold(self, device: torch.device) -> dict[tuple[int, str], tuple[Tensor, Tensor | None]]:
        """(subject index, modality) -> (images float32 (S, H, W), label maps int64 or None), on
        ``device``, copied once; only the labels the samples show."""
        labels = {key: torch.as_tensor(label).to(device).long() for key, label in self.shown_labels.items()}
        return {(i, m): (torch.as_tensor(s.volumes[m].image).to(device).float(), labels.get((i, m)))
                for i, s in enumerate(self.subjects) for m in self.config.modalities if m in s.volumes}

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
        key = self.index[item]
        if key in self._fixed:
            chosen = self._fixed[key]
        else:  # seeded through torch, so DataLoader worker seeding applies
            chosen = self._candidates(*key, np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()))))
        subject = self.subjects[key[0]]
        gather = self._gather if self._held is None else self._gather_held
        images, masks, labelled, present = gather(key[0], chosen)
        sample = {"images": images, "masks": masks, "labelled": torch.from_numpy(labelled),
                  "present": torch.from_numpy(present), "subject": torch.tensor(key[0], dtype=torch.int64),
                  "slice": torch.tensor(key[1], dtype=torch.int64)}
        if self.training:
            sample.update(self._augment(images, masks))
            if self.pool is not None:
                sample["pool_masks"] = self.pool.draw()
        if self._with_coordinates:
            sample.update(self._coordinates(subject, chosen))
        return sample

    def _gather(self, subject_index: int, chosen: np.ndarray) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
        """The chosen slices from host memory: images (n, k, 1, H, W), masks (n, k, H, W), labelled
        (n, k) and present (n,) (zeros and False where a modality or its labels are missing or hidden)."""
        cfg, subject = self.config, self.subjects[subject_index]
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
            label = self.shown_labels.get((subject_index, modality))
            if label is not None:
                masks[m] = label[chosen[m]]
                labelled[m] = True
        return torch.from_numpy(images), torch.from_numpy(masks), labelled, present

    def _gather_held(self, subject_index: int, chosen: np.ndarray) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
        """:meth:`_gather` from the slices held on :attr:`device`: views of them stacked there (the
        indices are Python ints, so nothing is copied from the host)."""
        cfg = self.config
        n, k = len(cfg.modalities), cfg.num_candidates
        labelled, present = np.zeros((n, k), dtype=bool), np.zeros(n, dtype=bool)
        images, masks = [], []
        for m, modality in enumerate(cfg.modalities):
            volume, label = self._held.get((subject_index, modality), (None, None))
            present[m], labelled[m] = volume is not None, label is not None
            images += [None if volume is None else volume[i] for i in chosen[m].tolist()]
            masks += [None if label is None else label[i] for i in chosen[m].tolist()]
        like = next(x for x in images if x is not None)  # the target's slice is always there
        if any(x is None for x in images + masks):
            image_blank, mask_blank = torch.zeros_like(like), torch.zeros_like(like, dtype=torch.int64)
            images = [image_blank if x is None else x for x in images]
            masks = [mask_blank if x is None else x for x in masks]
        height, width = like.shape
        return (torch.stack(images).view(n, k, 1, height, width), torch.stack(masks).view(n, k, height, width),
                labelled, present)

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

    def _augment(self, images: Tensor, masks: Tensor) -> dict[str, Tensor]:
        """The sample's augmented ``images`` and ``masks`` (and ``soft_masks`` with ``soft_mask_classes``):
        its motions drawn (:func:`~dafnet.data.augment.draw_thetas`) and applied in one resampling per
        image; with ``warp="batch"`` the slices unwarped and the motions under ``THETA_KEY`` instead."""
        cfg = self.config
        n, k, _, height, width = images.shape
        soft = cfg.soft_mask_classes >= 2
        if not moves(cfg):  # no draw, so the random stream is that of a run without augmentation
            return {"soft_masks": foreground_onehot(masks, cfg.soft_mask_classes)} if soft else {}
        theta = draw_thetas(cfg, n, k, height, width)
        if cfg.warp == "batch":
            return {THETA_KEY: theta.float()}
        warped, warped_masks, soft_masks = warp_slices(images.view(n * k, 1, height, width),
                                                       masks.view(n * k, height, width),
                                                       theta.reshape(n * k, 3, 3), cfg.soft_mask_classes)
        out = {"images": warped.view_as(images), "masks": warped_masks.view_as(masks)}
        if soft_masks is not None:
            out["soft_masks"] = soft_masks.view(n, k, cfg.soft_mask_classes - 1, height, width)
        return out


def training_streams(subjects: list[Subject], config: SampleConfig, annotated_ids,
                     device: torch.device | str | None = None) -> dict[str, PairedSliceDataset]:
    """``labelled``: subjects in ``annotated_ids`` with target masks; ``unlabelled``: the others,
    their target masks hidden (other modalities keep theirs). ``device``: where both hold their slices
    (None: host memory)."""
    annotated = {str(i) for i in annotated_ids}
    target = config.target

    def has_target_label(s: Subject) -> bool:
        return target in s.volumes and s.volumes[target].label is not None

    labelled = [s for s in subjects if str(s.id) in annotated and has_target_label(s)]
    unlabelled = [s for s in subjects if not (str(s.id) in annotated and has_target_label(s))]
    return {
        "labelled": PairedSliceDataset(labelled, config, training=True, device=device),
        "unlabelled": PairedSliceDataset(unlabelled, config, training=True, hide_target_labels=True, device=device),
    }


__all__ = ["PairedSliceDataset", "SampleConfig", "rigid_theta", "rotate_sample", "training_streams", "warp_sample",
           "warp_soft_masks"]  # the warp functions live in dafnet.data.augment; re-exported here
