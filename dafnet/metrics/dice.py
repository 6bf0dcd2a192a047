"""Dice for evaluation (method.md 5): the paper's Dice and the standard per-class 3D Dice.

Paper Dice (the original code's): per slice, the prediction's foreground channels
(1..L) are thresholded at 0.5 and pooled with the one-hot truth's foreground channels;
a slice empty in both truth and prediction scores 1; the slices of a volume are
averaged, then mean and (population) std over volumes, in percent.

Standard 3D Dice: per volume and class, the arg-max prediction against the truth over
all slices of the volume; a class absent from both scores NaN (left out of means).

:class:`DiceMetric` reports the standard 3D Dice as MONAI's ``DiceMetric(include_background=
False)`` computes it on one-hot arg-max volumes: 2 |P n T| / (|P| + |T|) per class and volume;
with ``ignore_empty`` (MONAI's default) a class absent from the truth scores NaN (also when
predicted), otherwise 1 when absent from both and 0 when only predicted.

The plain functions are shared by :class:`DiceMetric` and the DAFNet method.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from dafnet.errors import DafnetError
from dafnet.interfaces import Metric, MetricInputs, MetricResult, Params


def _check(probabilities: Tensor, target: Tensor) -> None:
    if probabilities.ndim != 4 or target.ndim != 3 or probabilities.shape[0] != target.shape[0] \
            or probabilities.shape[-2:] != target.shape[-2:]:
        raise DafnetError(
            f"dice: expected probabilities (B, L + 1, H, W) and target (B, H, W), got "
            f"{tuple(probabilities.shape)} and {tuple(target.shape)}"
        )


def paper_dice_per_slice(probabilities: Tensor, target: Tensor, threshold: float = 0.5) -> Tensor:
    """(B,) paper Dice in [0, 1]: foreground pooled, prediction > threshold, empty/empty = 1."""
    _check(probabilities, target)
    num_channels = probabilities.shape[1]
    prediction = (probabilities[:, 1:] > threshold).float()
    truth = F.one_hot(target.long().clamp(0, num_channels - 1), num_channels).permute(0, 3, 1, 2)[:, 1:].float()
    intersection = (prediction * truth).sum(dim=(1, 2, 3))
    total = prediction.sum(dim=(1, 2, 3)) + truth.sum(dim=(1, 2, 3))
    dice = 2 * intersection / total.clamp_min(1)
    return torch.where(total > 0, dice, torch.ones_like(dice))


def class_overlaps_per_slice(probabilities: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per slice and foreground class of the arg-max prediction: (intersection, predicted, true)
    pixel counts, each (B, L)."""
    _check(probabilities, target)
    num_channels = probabilities.shape[1]
    prediction = F.one_hot(probabilities.argmax(dim=1), num_channels).permute(0, 3, 1, 2)[:, 1:].float()
    truth = F.one_hot(target.long().clamp(0, num_channels - 1), num_channels).permute(0, 3, 1, 2)[:, 1:].float()
    return ((prediction * truth).sum(dim=(2, 3)), prediction.sum(dim=(2, 3)), truth.sum(dim=(2, 3)))


def mean_per_volume(values, volume_ids) -> dict:
    """Mean of per-slice values grouped by volume id, in order of first appearance."""
    groups: dict = defaultdict(list)
    for value, vid in zip(np.asarray(values, dtype=np.float64).tolist(), list(volume_ids)):
        groups[vid].append(value)
    return {vid: float(np.mean(v)) for vid, v in groups.items()}


def dice_3d_per_volume(intersection, predicted, true, volume_ids) -> dict:
    """Per-class 3D Dice per volume from per-slice counts (arrays (N, L)); NaN where a class is absent in both."""
    intersection, predicted, true = (np.asarray(a, dtype=np.float64) for a in (intersection, predicted, true))
    ids = np.asarray([str(v) for v in volume_ids])
    out = {}
    for vid in dict.fromkeys(str(v) for v in volume_ids):
        rows = ids == vid
        inter, total = intersection[rows].sum(0), predicted[rows].sum(0) + true[rows].sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[vid] = np.where(total > 0, 2 * inter / total, np.nan)
    return out


def monai_dice_per_volume(intersection, predicted, true, volume_ids, ignore_empty: bool = True) -> dict:
    """Per-class 3D Dice per volume as MONAI's DiceMetric (include_background=False) from per-slice
    counts (arrays (N, L)): NaN where the truth is empty (``ignore_empty``), else 1 when both are empty."""
    intersection, predicted, true = (np.asarray(a, dtype=np.float64) for a in (intersection, predicted, true))
    ids = np.asarray([str(v) for v in volume_ids])
    out = {}
    for vid in dict.fromkeys(str(v) for v in volume_ids):
        rows = ids == vid
        inter, p, t = intersection[rows].sum(0), predicted[rows].sum(0), true[rows].sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = 2 * inter / (p + t)
        out[vid] = np.where(t > 0, dice, np.nan) if ignore_empty else np.where(p + t > 0, dice, 1.0)
    return out


def summarise_percent(per_volume: dict) -> tuple[float, float]:
    """(mean, population std) over volumes, in percent; NaN when there are none."""
    values = np.asarray(list(per_volume.values()), dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    return float(100 * values.mean()), float(100 * values.std())


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    return (float(values.mean()), float(values.std())) if values.size else (float("nan"), float("nan"))


class DiceMetric(Metric):
    """Paper Dice (``dice_*``) and MONAI-style per-class 3D Dice (``dice3d_*``), per prediction type, in
    percent: mean and population std over volumes (registry: dice)."""

    required_inputs = ("prediction", "target")

    class Params(Params):
        threshold: float = Field(0.5, gt=0, lt=1, description="probability threshold of the paper Dice")
        ignore_empty: bool = Field(True, description="3D Dice: a class absent from the truth scores NaN "
                                   "(MONAI's ignore_empty); false: 1 if absent from both, 0 if only predicted")

    def reset(self) -> None:
        self._slices: dict = defaultdict(lambda: {"dice": [], "ids": [], "inter": [], "pred": [], "true": []})

    def update(self, inputs: MetricInputs) -> None:
        if inputs.prediction is None or inputs.target is None:
            raise DafnetError("dice metric: needs MetricInputs.prediction and .target")
        if len(inputs.case_ids) != inputs.prediction.shape[0]:
            raise DafnetError(
                f"dice metric: {len(inputs.case_ids)} case ids for a batch of {inputs.prediction.shape[0]}"
            )
        probabilities, target = inputs.prediction.detach().float(), inputs.target.detach()
        store = self._slices[inputs.prediction_type]
        store["dice"].append(paper_dice_per_slice(probabilities, target, self.params.threshold).cpu())
        for key, value in zip(("inter", "pred", "true"), class_overlaps_per_slice(probabilities, target)):
            store[key].append(value.cpu())
        store["ids"].extend(str(c) for c in inputs.case_ids)

    def _class_names(self, num_classes: int) -> list[str]:
        names = self.facts.class_names
        if names is not None and len(names) == num_classes:
            return list(names)
        return [f"class{i}" for i in range(1, num_classes + 1)]

    def compute(self) -> MetricResult:
        summary: dict[str, float] = {}
        rows: dict[str, dict] = {}
        for kind, store in self._slices.items():
            if not store["ids"]:
                continue
            per_volume = mean_per_volume(torch.cat(store["dice"]).numpy(), store["ids"])
            summary[f"dice_{kind}_mean"], summary[f"dice_{kind}_std"] = summarise_percent(per_volume)
            counts = [torch.cat(store[k]).numpy() for k in ("inter", "pred", "true")]
            dice3d = monai_dice_per_volume(*counts, store["ids"], self.params.ignore_empty)
            pooled = monai_dice_per_volume(*(c.sum(1, keepdims=True) for c in counts), store["ids"],
                                           self.params.ignore_empty)
            names = self._class_names(next(iter(dice3d.values())).shape[0])
            table = 100 * np.stack(list(dice3d.values()))
            for c, name in enumerate(names):
                summary[f"dice3d_{kind}_{name}_mean"], summary[f"dice3d_{kind}_{name}_std"] = _mean_std(table[:, c])
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                class_mean = np.nanmean(table, axis=1)
            summary[f"dice3d_{kind}_mean"], summary[f"dice3d_{kind}_std"] = _mean_std(class_mean)
            pooled_table = 100 * np.stack(list(pooled.values()))[:, 0]
            summary[f"dice3d_{kind}_foreground_mean"], summary[f"dice3d_{kind}_foreground_std"] = \
                _mean_std(pooled_table)
            for vid, value in per_volume.items():
                row = rows.setdefault(vid, {"case": vid})
                row[f"dice_{kind}"] = 100 * value
                for c, name in enumerate(names):
                    row[f"dice3d_{kind}_{name}"] = float(100 * dice3d[vid][c])
                row[f"dice3d_{kind}_foreground"] = float(100 * pooled[vid][0])
        return MetricResult(summary=summary, per_case=list(rows.values()))


__all__ = [
    "DiceMetric",
    "class_overlaps_per_slice",
    "dice_3d_per_volume",
    "mean_per_volume",
    "monai_dice_per_volume",
    "paper_dice_per_slice",
    "summarise_percent",
]
