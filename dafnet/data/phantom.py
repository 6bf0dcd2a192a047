"""The built-in phantom: synthetic, seeded, multimodal short-axis cardiac MR.

Each subject has a continuous anatomy (:mod:`dafnet.data.phantom_shapes`); each modality
is a separately acquired, misaligned stack of it (:mod:`dafnet.data.phantom_motion`)
rendered with its own MR-like contrast (:mod:`dafnet.data.phantom_contrast`). Subject
``i`` depends only on ``seed``, ``i`` and the geometry/noise parameters, not on how many
subjects or which other modalities are requested. See docs/phantom.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from dafnet.data.phantom_contrast import MODALITY_NAMES, render
from dafnet.data.phantom_motion import sample_acquisition
from dafnet.data.phantom_shapes import LABEL_OF_TISSUE, sample_anatomy
from dafnet.data.phantom_tissues import tissue_map
from dafnet.interfaces import DataSource, Facts, Params, Subject, Volume

CLASS_NAMES = ("lv", "myocardium", "rv")
DEFAULT_FIELD_OF_VIEW_MM = 200.0
"""Default in-plane field of view: a heart-centred crop, 1.5625 mm x 128 px (ERI resolution)."""

Pixels = Annotated[int, Field(ge=16, le=1024)]
ModalityName = Literal["cine", "lge", "t2"]


class PhantomDataSource(DataSource):
    """Synthetic cine / LGE / T2 short-axis stacks with LV, myocardium and RV labels."""

    class Params(Params):
        subjects: int = Field(12, ge=1, le=100_000, description="number of subjects")
        slices: int = Field(8, ge=1, le=256, description="slices per stack (base to near apex)")
        slice_count_jitter: int = Field(
            0, ge=0, le=16,
            description="each stack gets slices + a random integer in [-j, j] slices (at least 1)")
        image_size: Pixels | tuple[Pixels, Pixels] = Field(
            64, description="slice size in pixels: an int (square) or [H, W]")
        modalities: tuple[ModalityName, ...] = Field(
            ("cine", "lge"), min_length=1, description="modalities to render, in order")
        seed: int = Field(0, ge=0, description="seed; the same seed gives bit-identical data")
        noise: float = Field(
            0.03, ge=0.0, le=0.5,
            description="Rician noise sigma relative to the brightest tissue (x1.5 LGE, x1.3 T2)")
        deformation_mm: float = Field(
            3.0, ge=0.0, le=20.0,
            description="std (mm) of the smooth non-linear displacement per modality stack")
        max_shift_mm: float = Field(
            8.0, ge=0.0, le=100.0, description="in-plane shift per modality stack, uniform in +-mm")
        max_rotation_degrees: float = Field(
            10.0, ge=0.0, le=180.0, description="in-plane rotation per modality stack, +-degrees")
        spacing_mm: float | None = Field(
            None, gt=0.0, le=20.0,
            description="in-plane pixel spacing in mm; default 200 mm / max(H, W) "
                        "(3.125 mm at 64 px, 1.5625 mm at 128 px)")

        @field_validator("modalities")
        @classmethod
        def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
            if len(set(value)) != len(value):
                raise ValueError(f"modalities repeat: {list(value)}")
            return value

    def __init__(self, params: PhantomDataSource.Params, facts: Facts | None = None) -> None:
        super().__init__(params, facts if facts is not None else Facts())

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.params.modalities)

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.params.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def spacing_mm(self) -> float:
        """In-plane pixel spacing (mm)."""
        if self.params.spacing_mm is not None:
            return float(self.params.spacing_mm)
        return DEFAULT_FIELD_OF_VIEW_MM / max(self.image_size)

    def _rng(self, subject: int, stream: int) -> np.random.Generator:
        """Independent stream per (seed, subject, stream); stream 0 is the anatomy."""
        return np.random.default_rng(np.random.SeedSequence(self.params.seed, spawn_key=(subject, stream)))

    def subject(self, index: int) -> Subject:
        """Subject ``index`` (independent of how many subjects are requested)."""
        p = self.params
        anatomy = sample_anatomy(self._rng(index, 0))
        volumes = {}
        for name in p.modalities:
            rng = self._rng(index, 1 + MODALITY_NAMES.index(name))
            count = p.slices
            if p.slice_count_jitter:
                count = max(1, count + int(rng.integers(-p.slice_count_jitter, p.slice_count_jitter + 1)))
            acq = sample_acquisition(rng, anatomy.length, count, self.image_size, self.spacing_mm,
                                     p.max_shift_mm, p.max_rotation_degrees, p.deformation_mm)
            tissue = tissue_map(anatomy, acq.u, acq.v, acq.z[:, None, None])
            image = render(tissue, name, rng, p.noise, self.spacing_mm)
            positions = anatomy.table_offset + acq.z
            volumes[name] = Volume(image=image, label=LABEL_OF_TISSUE[tissue],
                                   slice_positions=positions,
                                   affine=stack_affine(positions, acq.spacing, self.image_size,
                                                       self.spacing_mm),
                                   coordinates=np.stack([acq.u, acq.v], axis=1).astype(np.float32))
        return Subject(id=f"phantom_{index:03d}", volumes=volumes)

    def load(self) -> list[Subject]:
        return [self.subject(i) for i in range(self.params.subjects)]


def stack_affine(positions: np.ndarray, slice_spacing: float, size: tuple[int, int],
                 spacing_mm: float) -> np.ndarray:
    """Voxel (slice, row, col) -> world mm: x = -col, y = -row (about the image centre),
    z = the slice position along the stack normal (base -> apex)."""
    h, w = size
    affine = np.zeros((4, 4))
    affine[0, 2] = -spacing_mm
    affine[0, 3] = (w - 1) / 2.0 * spacing_mm
    affine[1, 1] = -spacing_mm
    affine[1, 3] = (h - 1) / 2.0 * spacing_mm
    affine[2, 0] = slice_spacing
    affine[2, 3] = positions[0]
    affine[3, 3] = 1.0
    return affine


def write_phantom(out_dir: str | Path, params: PhantomDataSource.Params,
                  overwrite: bool = False, overwrite_option: str = "overwrite=True") -> Path:
    """Generate the phantom and write it in the nnU-Net v2 raw layout; returns ``out_dir``.

    See :func:`dafnet.data.nnunet_writer.write_nnunet_raw` for ``overwrite`` (it replaces only
    a dataset dafnet wrote) and ``overwrite_option`` (how messages name that switch)."""
    from dafnet.data.nnunet_writer import check_output, write_nnunet_raw

    check_output(out_dir, overwrite, overwrite_option)  # before the (possibly long) generation
    source = PhantomDataSource(params, Facts())
    return write_nnunet_raw(
        source.load(), out_dir, source.modalities, source.class_names,
        dataset_name="DafnetPhantom", overwrite=overwrite,
        overwrite_option=overwrite_option,
        metadata={"source": "phantom", "params": params.model_dump(mode="json")},
    )
