"""Metrics: registered evaluators fed batch by batch, summarised once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from dafnet.interfaces.base import Component, Params
from dafnet.interfaces.facts import Facts


@dataclass
class AlignmentErrors:
    """Per-pixel errors of one batch for one source modality (``MetricInputs.alignment``; see
    :mod:`dafnet.metrics.alignment_error`)."""

    source: str
    """The source (moving) modality's name."""
    aligner_mm: Tensor
    """(B, H, W) the aligner's error in mm, NaN where not counted or sampled outside the source."""
    identity_mm: Tensor
    """(B, H, W) the identity's error in mm, NaN where not counted."""
    source_mask: Tensor | None = None
    """(B, H, W) the source slice's truth mask, when labelled (for the figure)."""
    grid: Tensor | None = None
    """(B, H, W, 2) the aligner's sampling grid (for the figure)."""


@dataclass
class MetricInputs:
    """What an evaluation pass hands to every metric; a metric uses the fields it needs."""

    case_ids: list[str]
    """Subject id of each sample in the batch."""
    prediction_type: str = "fused"
    """single | deformed | fused | weighted."""
    prediction: Tensor | None = None
    """(B, L + 1, H, W) class probabilities."""
    target: Tensor | None = None
    """(B, H, W) integer ground truth (0 = background)."""
    anatomy: Tensor | None = None
    """(B, C, H, W) anatomy factors."""
    z: Tensor | None = None
    """(B, n_z) modality factors (the mean of q(z | x, s))."""
    image: Tensor | None = None
    """(B, 1, H, W) input images."""
    modality: list[str] | None = None
    """Modality name of each sample."""
    spacing: tuple[float, float] | None = None
    """In-plane pixel spacing in mm (for distance metrics)."""
    logvar: Tensor | None = None
    """(B, n_z) log-variance of q(z | x, s) (for the per-dimension variance of the probe)."""
    slice_index: Tensor | None = None
    """(B,) index of each sample's (target) slice in its volume (to stack slices in 3D)."""
    slice_spacing: float | None = None
    """Distance between neighbouring slices in mm, when known (for 3D distance metrics)."""
    alignment: AlignmentErrors | None = None
    """The aligner's and the identity's in-plane error against the truth, when the data know it."""


@dataclass
class MetricResult:
    summary: dict[str, float]
    """Named numbers, e.g. {"dice_mean": 81.2, "dice_std": 6.3}."""
    per_case: list[dict] = field(default_factory=list)
    """One row per case (written as CSV)."""
    files: list[str] = field(default_factory=list)
    """Figures or tables the metric wrote."""
    notes: list[str] = field(default_factory=list)
    """Messages for the reader, e.g. why a number is n/a (printed and written to metrics.json)."""


class Metric(Component, ABC):
    """Built as ``Cls(params, facts)``; ``update`` per batch, then ``compute``.

    The evaluation driver (``dafnet evaluate``) uses three optional hooks, declared here with
    their defaults: :attr:`required_inputs` (through :meth:`wants`), :meth:`attach` and
    :attr:`output_dir`.
    """

    required_inputs: ClassVar[tuple[str, ...]] = ()
    """The :class:`MetricInputs` fields this metric needs: the driver feeds it only the inputs
    that have every one of them (:meth:`wants`). Default: every input."""
    method: Any = None
    """The evaluated method, once :meth:`attach` has been called (None before)."""
    output_dir: str | Path | None = None
    """The folder for this metric's figures, set by the driver before the first update; None:
    draw nothing. List what you write in :attr:`MetricResult.files`."""

    def __init__(self, params: Params, facts: Facts) -> None:
        self.params = params
        self.facts = facts
        self.reset()

    def wants(self, inputs: MetricInputs) -> bool:
        """Whether ``update`` gets ``inputs``: every field of :attr:`required_inputs` is set."""
        return all(getattr(inputs, name) is not None for name in self.required_inputs)

    def attach(self, method: Any) -> None:
        """Called once by the driver before the first update with the evaluated method (in eval mode),
        for a metric that needs its networks (e.g. the decoder). The default keeps it as
        :attr:`method`; override it to check what the metric needs (and call this one)."""
        self.method = method

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def update(self, inputs: MetricInputs) -> None: ...

    @abstractmethod
    def compute(self) -> MetricResult: ...
