"""95th-percentile symmetric Hausdorff distance in mm (registry: hd95).

Per volume and foreground class, between the arg-max prediction and the truth. Surfaces
are the mask voxels with a background neighbour (the mask minus its binary erosion, face
connectivity); the distance of every surface voxel of one mask to the nearest surface voxel
of the other comes from scipy's Euclidean distance transform with the voxel spacing. The
95th percentile of each direction is taken and the larger is reported (as MONAI's
``compute_hausdorff_distance(percentile=95)``).

Geometry: in-plane spacing from ``MetricInputs.spacing`` (row, col mm; default 1 mm, then
the numbers are in pixels). When the slice spacing is known (``MetricInputs.slice_spacing``)
and the evaluated slices of a volume are consecutive (``MetricInputs.slice_index``), they are
stacked into a 3D volume with that spacing; otherwise HD95 is computed per slice in 2D and
averaged over the slices where it is defined.

Empty cases: a class empty in the truth or in the prediction (of the volume, or of a slice
in 2D) has no defined distance and scores NaN; NaNs are left out of means and counted.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import Field
from scipy import ndimage

from dafnet.errors import DafnetError
from dafnet.interfaces import Metric, MetricInputs, MetricResult, Params


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                          border_value=0)


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing) -> float:
    """HD95 in mm between two boolean masks (2D or 3D) with per-axis ``spacing``; NaN if either is empty."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if prediction.shape != truth.shape:
        raise DafnetError(f"hd95: shapes differ, {prediction.shape} and {truth.shape}")
    if not prediction.any() or not truth.any():
        return float("nan")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != prediction.ndim:
        raise DafnetError(f"hd95: {len(spacing)} spacings for a {prediction.ndim}D mask")
    surface_p, surface_t = _surface(prediction), _surface(truth)
    to_t = ndimage.distance_transform_edt(~surface_t, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing)
    return float(max(np.percentile(to_t[surface_p], 95), np.percentile(to_p[surface_t], 95)))


class HD95Metric(Metric):
    """HD95 (mm) per volume and class for every prediction type; 3D when slices stack, else 2D mean."""

    required_inputs = ("prediction", "target")

    class Params(Params):
        mode: str = Field("auto", pattern="^(auto|2d)$", description="auto: 3D when the slice spacing is "
                          "known and the slices are consecutive, else 2D per slice; 2d: always per slice")

    def reset(self) -> None:
        # kind -> case -> list of (slice index, predicted labels (H, W), truth (H, W))
        self._slices: dict = defaultdict(lambda: defaultdict(list))
        self._geometry: dict = {}

    def update(self, inputs: MetricInputs) -> None:
        if inputs.prediction is None or inputs.target is None:
            raise DafnetError("hd95 metric: needs MetricInputs.prediction and .target")
        labels = inputs.prediction.detach().argmax(dim=1).cpu().numpy().astype(np.int16)
        truth = inputs.target.detach().cpu().numpy().astype(np.int16)
        if labels.shape != truth.shape or len(inputs.case_ids) != labels.shape[0]:
            raise DafnetError(f"hd95 metric: prediction {tuple(inputs.prediction.shape)}, target "
                              f"{tuple(inputs.target.shape)} and {len(inputs.case_ids)} case ids do not match")
        index = (inputs.slice_index.detach().cpu().tolist() if inputs.slice_index is not None
                 else [None] * labels.shape[0])
        store = self._slices[inputs.prediction_type]
        for b, case in enumerate(inputs.case_ids):
            store[str(case)].append((index[b], labels[b], truth[b]))
            self._geometry.setdefault(str(case), (inputs.spacing or (1.0, 1.0), inputs.slice_spacing))
        self._classes = inputs.prediction.shape[1] - 1

    def _case(self, slices: list, spacing, slice_spacing) -> tuple[np.ndarray, bool]:
        order = [i for i, _, _ in slices]
        stacked = (self.params.mode == "auto" and slice_spacing is not None and None not in order
                   and len(set(order)) == len(order) and max(order) - min(order) == len(order) - 1)
        out = np.full(self._classes, np.nan)
        if stacked:
            slices = sorted(slices, key=lambda t: t[0])
            pred = np.stack([p for _, p, _ in slices])
            true = np.stack([t for _, _, t in slices])
            for c in range(1, self._classes + 1):
                out[c - 1] = hd95(pred == c, true == c, (slice_spacing, *spacing))
            return out, True
        for c in range(1, self._classes + 1):
            values = [hd95(p == c, t == c, spacing) for _, p, t in slices]
            values = [v for v in values if np.isfinite(v)]
            out[c - 1] = float(np.mean(values)) if values else np.nan
        return out, False

    def compute(self) -> MetricResult:
        summary: dict[str, float] = {}
        rows: dict[str, dict] = {}
        names = None
        for kind, cases in self._slices.items():
            if names is None:
                given = self.facts.class_names
                names = list(given) if given and len(given) == self._classes else \
                    [f"class{i}" for i in range(1, self._classes + 1)]
            table, stacked = [], 0
            for case, slices in cases.items():
                values, is3d = self._case(slices, *self._geometry[case])
                stacked += is3d
                table.append(values)
                row = rows.setdefault(case, {"case": case})
                for c, name in enumerate(names):
                    row[f"hd95_{kind}_{name}"] = float(values[c])
            table = np.stack(table)
            for c, name in enumerate(names):
                column = table[:, c][np.isfinite(table[:, c])]
                summary[f"hd95_{kind}_{name}_mean"] = float(column.mean()) if column.size else float("nan")
                summary[f"hd95_{kind}_{name}_std"] = float(column.std()) if column.size else float("nan")
                summary[f"hd95_{kind}_{name}_undefined"] = float(table.shape[0] - column.size)
            finite = table[np.isfinite(table)]
            summary[f"hd95_{kind}_mean"] = float(finite.mean()) if finite.size else float("nan")
            summary[f"hd95_{kind}_volumes_3d"] = float(stacked)
        return MetricResult(summary=summary, per_case=list(rows.values()))


__all__ = ["HD95Metric", "hd95"]
