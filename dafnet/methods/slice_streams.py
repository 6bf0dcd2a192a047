"""Training and evaluation data of the single-input methods (unet, sdnet, copy, register).

Training data for single-input models: one :class:`~dafnet.data.slices.PairedSliceDataset` per
modality the model trains on (each sample one slice of one modality, ``images`` (1, 1, 1, H, W)),
mixed into one dataset (``mode: multi``). Target masks are kept only for annotated subjects
(``data.annotation_fraction``); the other modalities always keep theirs. Evaluation samples are
every target slice with its paired slice of every other modality, as DAFNet's.
"""

from __future__ import annotations

import torch
from torch.utils.data import ConcatDataset, Dataset

from dafnet.data.slices import PairedSliceDataset, SampleConfig
from dafnet.data.splits import annotated_subjects
from dafnet.errors import DafnetError
from dafnet.interfaces import MethodContext


def single_modality_streams(subjects: list, context: MethodContext, train_modalities: tuple[str, ...],
                            target: str) -> dict[str, Dataset]:
    """``labelled``: slices with masks of every training modality (target masks only of annotated
    subjects); ``unlabelled``: the target slices of the other subjects (masks hidden). With
    ``data.augment.warp: batch`` the samples carry their motions unwarped: the method's ``on_device``
    applies them (:func:`~dafnet.data.augment.warp_batch`)."""
    subject_ids = [s.id for s in subjects]
    annotated = {str(i) for i in annotated_subjects(subject_ids, context.annotation_fraction,
                                                    context.annotation_seed)}
    labelled, unlabelled = [], []
    for modality in train_modalities:
        config = SampleConfig((modality,), modality, rotation_degrees=context.rotation_degrees, seed=context.seed,
                              warp=context.augment_warp)
        with_labels = [s for s in subjects if modality in s.volumes and s.volumes[modality].label is not None
                       and (modality != target or str(s.id) in annotated)]
        labelled.append(PairedSliceDataset(with_labels, config, training=True, device=context.slices_device))
        if modality == target:
            ids = {s.id for s in with_labels}
            rest = [s for s in subjects if s.id not in ids and modality in s.volumes]
            unlabelled.append(PairedSliceDataset(rest, config, training=True, hide_target_labels=True,
                                                 device=context.slices_device))
    return {"labelled": ConcatDataset(labelled), "unlabelled": ConcatDataset(unlabelled or [_empty()])}


def _empty() -> Dataset:
    return torch.utils.data.TensorDataset(torch.zeros(0))


def require_labelled(name: str, streams: dict[str, Dataset], train_modalities, target: str) -> None:
    if len(streams["labelled"]) == 0:
        raise DafnetError(f"{name}: no annotated slices to train on (modalities {list(train_modalities)}, "
                          f"target {target!r})",
                          hint="raise data.annotation_fraction, or use mode: multi / train_on: <source> so "
                               "the source masks are used (a single-modality model cannot learn at 0%)")


def evaluation_dataset(subjects: list, context: MethodContext, modalities: tuple[str, ...], target: str,
                       pairing: str = "expert", radius: int = 2) -> PairedSliceDataset:
    """Every target slice with its paired slice of every other modality (no augmentation)."""
    config = SampleConfig(modalities, target, 1, radius, pairing, 0.0, context.seed)
    return PairedSliceDataset(subjects, config, training=False)


__all__ = ["evaluation_dataset", "require_labelled", "single_modality_streams"]
