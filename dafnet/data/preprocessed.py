"""What the sources of preprocessed NIfTI stacks share (``nnunet``, ``datalist``, ``hf``): their
params' types, :class:`IntensityParams`, and :class:`PreprocessedSource`, a data source whose
volumes are preprocessed by :mod:`dafnet.data.preprocess` with invertible records."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from dafnet.data.plans import AUTO, Survey, median_spacing
from dafnet.data.preprocess import PreprocessRecord
from dafnet.errors import DafnetError
from dafnet.interfaces import DataSource, Params, Subject

Pixels = Annotated[int, Field(ge=8, le=2048)]
Millimetres = Annotated[float, Field(gt=0.0, le=100.0)]


class IntensityParams(Params):
    clip_percentiles: tuple[float, float] | None = Field(
        (0.5, 99.5), description="[low, high] percentiles clipped before the min-max rescale to "
                                 "[-1, 1]; null rescales the full range")
    scope: Literal["slice", "volume"] = Field(
        "slice", description="percentiles and min/max per slice (the paper's) or per volume")

    @field_validator("clip_percentiles")
    @classmethod
    def _ordered(cls, value):
        if value is not None and not 0.0 <= value[0] < value[1] <= 100.0:
            raise ValueError(f"need 0 <= low < high <= 100, got {list(value)}")
        return value


def preparing(items, total: int, description: str):
    """A transient rich progress bar on stderr while volumes are decoded (terminals only)."""
    import sys

    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)
    if not sys.stderr.isatty() or total < 2:
        return items
    return track(items, total=total, description=description, console=console, transient=True)


class PreprocessedSource(DataSource):
    """A data source whose volumes are preprocessed NIfTI stacks with invertible records:
    ``image_size`` from ``params.image_size``, and ``record`` of each loaded volume.

    ``spacing_mm: auto`` (sources that can :meth:`survey` their headers): the spacing is fixed
    before loading by :func:`dafnet.data.plans.plan_data` (:meth:`use_spacing`); a source loaded
    without a plan uses the median over all its cases' images."""

    _records: dict[tuple[str, str], PreprocessRecord]
    _planned_spacing: tuple[float, float] | None = None
    _subjects: list[Subject] | None = None

    def survey(self) -> Survey:
        """Per case, the in-plane spacing of each image and which ones are labelled (headers only)."""
        raise NotImplementedError(f"{type(self).__name__} cannot plan spacing_mm: auto")

    def use_spacing(self, spacing: tuple[float, float]) -> None:
        """Fix the spacing of ``spacing_mm: auto`` (before the first :meth:`load`)."""
        spacing = (float(spacing[0]), float(spacing[1]))
        if self._subjects is not None and self._planned_spacing != spacing:
            raise DafnetError(f"the data were loaded at {self._planned_spacing} mm; cannot plan {spacing} mm")
        self._planned_spacing = spacing

    def target_spacing(self) -> tuple[float, float] | None:
        """The in-plane (row, col) spacing volumes are resampled to; None keeps each file's."""
        s = self.params.spacing_mm
        if s == AUTO:
            if self._planned_spacing is None:
                survey = self.survey()
                self._planned_spacing = median_spacing([v for case in survey.spacings.values()
                                                        for v in case.values()])
            return self._planned_spacing
        return None if s is None else ((float(s), float(s)) if isinstance(s, (int, float)) else tuple(s))

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.params.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def record(self, subject_id: str, modality: str) -> PreprocessRecord:
        """How a loaded volume was made; ``record(...).restore(pred)`` maps a prediction back
        to the file's original grid."""
        self.load()
        try:
            return self._records[(subject_id, modality)]
        except KeyError:
            raise DafnetError(f"no volume {modality!r} of subject {subject_id!r} was loaded") from None
