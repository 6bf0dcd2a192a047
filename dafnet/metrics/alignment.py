"""The aligner's in-plane error against the truth, in mm (registry: alignment).

Reads ``MetricInputs.alignment`` (:class:`~dafnet.interfaces.AlignmentErrors`), which DAFNet's
evaluation fills when the data know every pixel's anatomy coordinate (the phantom's; see
:mod:`dafnet.metrics.alignment_error` for the definition). Per case and overall (pixels pooled):
the median and 95th percentile of the aligner's and of the identity's error over the counted
pixels (the target's foreground where both slices have coordinates and the aligner samples inside
the source slice), the number of those pixels and the share the aligner sampled outside. With
several source modalities the same per modality (``align_<m>_median_mm``...). Draws
``alignment_error.png`` (:mod:`dafnet.metrics.alignment_figure`). Inputs without ``alignment``
are skipped; when none came, only ``alignment_pixels = 0`` is reported, with a note saying why.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from dafnet.interfaces import Metric, MetricInputs, MetricResult, Params
from dafnet.metrics.alignment_error import error_statistics

NOT_AVAILABLE = ("alignment: n/a, no evaluation input carried the truth's coordinates. Only data that know "
                 "where each pixel lies in the anatomy have them (the built-in phantom source; not an nnU-Net "
                 "folder, a datalist or a Hugging Face dataset, even one written from the phantom), and only "
                 "a method with an aligner reports them (DAFNet). Evaluate a DAFNet run with --data on a "
                 "phantom recipe to measure its aligner.")


def _named(statistics: dict[str, float], source: str | None) -> dict[str, float]:
    """``align_median_mm`` -> ``align_<source>_median_mm`` (unchanged when ``source`` is None)."""
    out = {}
    for key, value in statistics.items():
        if key in ("pixels", "outside_percent"):
            key = f"alignment_{key}" if source is None else f"alignment_{source}_{key}"
        elif source is not None:
            kind, rest = key.split("_", 1)
            key = f"{kind}_{source}_{rest}"
        out[key] = value
    return out


class AlignmentMetric(Metric):
    """Median / p95 in-plane alignment error (mm) of the aligner and of the identity, against the truth."""

    required_inputs = ("alignment",)

    class Params(Params):
        figure: bool = Field(True, description="draw alignment_error.png (error CDFs and one example)")

    def reset(self) -> None:
        # case -> source -> list of (aligner, identity) 1-D arrays of the counted pixels
        self._errors: dict = defaultdict(lambda: defaultdict(list))
        self._example: dict | None = None

    def update(self, inputs: MetricInputs) -> None:
        errors = inputs.alignment
        if errors is None:
            return
        aligner = errors.aligner_mm.detach().float().cpu()
        identity = errors.identity_mm.detach().float().cpu()
        counted = identity.isfinite()
        for b, case in enumerate(inputs.case_ids):
            self._errors[str(case)][errors.source].append(
                (aligner[b][counted[b]].numpy(), identity[b][counted[b]].numpy()))
        self._keep_example(inputs, counted.flatten(1).sum(dim=1))

    def _keep_example(self, inputs: MetricInputs, counts: torch.Tensor) -> None:
        """The sample with the most counted pixels among those with a source mask and an image."""
        errors = inputs.alignment
        if errors.source_mask is None or errors.grid is None or inputs.image is None or inputs.target is None:
            return
        b = int(counts.argmax())
        if self._example is not None and int(counts[b]) <= self._example["pixels"]:
            return
        index = inputs.slice_index[b].item() if inputs.slice_index is not None else b
        self._example = {"pixels": int(counts[b]), "case": f"{inputs.case_ids[b]}:{index}", "source": errors.source,
                         "image": inputs.image[b, 0].detach().float().cpu(),
                         "truth": inputs.target[b].detach().cpu(),
                         "source_mask": errors.source_mask[b].detach().cpu(),
                         "grid": errors.grid[b].detach().float().cpu()}

    def compute(self) -> MetricResult:
        if not self._errors:
            return MetricResult(summary={"alignment_pixels": 0.0}, notes=[NOT_AVAILABLE])
        sources = sorted({s for per_source in self._errors.values() for s in per_source})
        rows = []
        for case, per_source in self._errors.items():
            row = {"case": case, **_named(self._statistics(per_source.values()), None)}
            if len(sources) > 1:
                for source, parts in per_source.items():
                    row.update(_named(self._statistics([parts]), source))
            rows.append(row)
        pooled = {s: [p for per_source in self._errors.values() for p in per_source.get(s, [])] for s in sources}
        summary = _named(self._statistics(pooled.values()), None)
        if len(sources) > 1:
            for source, parts in pooled.items():
                summary.update(_named(self._statistics([parts]), source))
        files = []
        if self.params.figure and self.output_dir is not None:
            from dafnet.metrics.alignment_figure import draw_alignment_error

            aligner, identity = self._pooled(pooled.values())
            files.append(draw_alignment_error(Path(self.output_dir) / "alignment_error.png",
                                              aligner[np.isfinite(aligner)], identity[np.isfinite(aligner)],
                                              self._example))
        return MetricResult(summary=summary, per_case=rows, files=files)

    @staticmethod
    def _pooled(groups) -> tuple[np.ndarray, np.ndarray]:
        parts = [p for group in groups for p in group]
        return (np.concatenate([a for a, _ in parts]) if parts else np.zeros(0, np.float32),
                np.concatenate([i for _, i in parts]) if parts else np.zeros(0, np.float32))

    def _statistics(self, groups) -> dict[str, float]:
        return error_statistics(*(torch.from_numpy(x) for x in self._pooled(groups)))


__all__ = ["AlignmentMetric"]
