"""Data sources: where subjects come from, already at the networks' slice size.

A data source returns :class:`Subject` objects. Each holds one :class:`Volume` per
modality it has (a missing modality is simply absent). Volumes of one subject are NOT
assumed to be aligned or to have the same slices: ``slice_positions`` (mm along the
stack normal) is what pairs slices across modalities.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from dafnet.interfaces.base import Component, Params
from dafnet.interfaces.facts import Facts


@dataclass
class Volume:
    """One modality of one subject, as 2D slices ready for the networks."""

    image: np.ndarray
    """(S, H, W) float32 in [-1, 1]."""
    label: np.ndarray | None
    """(S, H, W) int64 class indices (0 = background, 1..L) or None when not annotated."""
    slice_positions: np.ndarray
    """(S,) float64, the position of each slice centre along the stack normal, in mm."""
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    """4x4 voxel-to-world (RAS, mm) matrix of the (S, H, W) array, axis order (slice, row, col)."""
    coordinates: np.ndarray | None = None
    """(S, 2, H, W) float32 or None: the in-plane anatomy coordinate (u to the image right, v to
    the image bottom, mm, in the subject's own anatomy frame) each pixel shows. Only a source that
    knows the truth fills it (the phantom); it measures alignment against the truth."""

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise ValueError(f"Volume.image must be (slices, H, W), got shape {self.image.shape}")
        if self.label is not None and self.label.shape != self.image.shape:
            raise ValueError(
                f"Volume.label shape {self.label.shape} differs from image shape {self.image.shape}"
            )
        if len(self.slice_positions) != self.image.shape[0]:
            raise ValueError(
                f"Volume has {self.image.shape[0]} slices but {len(self.slice_positions)} positions"
            )
        expected = (self.image.shape[0], 2, *self.image.shape[1:])
        if self.coordinates is not None and tuple(self.coordinates.shape) != expected:
            raise ValueError(
                f"Volume.coordinates shape {self.coordinates.shape} is not (slices, 2, H, W) = {expected}"
            )

    @property
    def num_slices(self) -> int:
        return int(self.image.shape[0])


@dataclass
class Subject:
    """A patient: its id and one volume per modality it has."""

    id: str
    volumes: dict[str, Volume]


class DataSource(Component, ABC):
    """A registered provider of subjects. Built as ``Cls(params, facts)``.

    It declares ``image_size``, ``modalities``, ``num_classes`` and ``class_names`` to the
    components built after it (see :meth:`declared_facts`).
    """

    def __init__(self, params: Params, facts: Facts) -> None:
        self.params = params
        self.facts = facts

    @property
    @abstractmethod
    def modalities(self) -> tuple[str, ...]:
        """All modality names this source can provide, in a fixed order."""

    @property
    @abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """Names of the foreground classes 1..L (the background, 0, is not listed)."""

    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every slice the source returns."""

    @abstractmethod
    def load(self) -> list[Subject]:
        """Every subject, deterministically (same params, same subjects)."""

    @classmethod
    def facts_without_data(cls, params: Params) -> dict:
        """Facts this source can declare from its params alone, without its data on disk
        (``dafnet summary`` uses them when the data folder is not on this machine)."""
        return {}

    def declared_facts(self) -> dict:
        return {
            "image_size": tuple(self.image_size),
            "modalities": tuple(self.modalities),
            "num_classes": len(self.class_names),
            "class_names": tuple(self.class_names),
        }
