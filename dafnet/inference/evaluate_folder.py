"""Score a folder of predicted masks against a folder of labels (``dafnet evaluate-folder``), as
nnU-Net's ``nnUNetv2_evaluate_folder`` does, with dafnet's metrics (:mod:`dafnet.metrics.dice`,
:mod:`dafnet.metrics.hd95`).

Cases are matched by file name: every NIfTI file ``<case>.nii.gz`` (or ``.nii``) of the
predictions folder needs ``<case>`` in the labels folder, on the same voxel grid (shape and
spacing). Per case:

* ``dice``: the paper's Dice (docs/metrics.md): per slice along the slice axis (the thickest,
  as the nnunet source chooses it), the classes pooled, a slice empty in both scoring 1, the
  mean over slices; in percent;
* per class ``dice3d_<class>``: 2 |P n T| / (|P| + |T|) over the whole volume, in percent; NaN
  when the class is in neither (nnU-Net's convention), 0 when it is only predicted;
* per class ``hd95_<class>``: the 95th-percentile symmetric Hausdorff distance in mm over the
  volume, with the file's voxel spacing; NaN when the class is empty in either.

The summary has each of these averaged over the cases (NaNs left out, and counted), and the
class means (nnU-Net's ``foreground_mean``).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dafnet.errors import DafnetError

SPACING_TOLERANCE_MM = 1e-3


@dataclass
class FolderEvaluation:
    """What ``evaluate_folder`` found: per-case rows, their means, and the files it wrote."""

    labels: dict[int, str]
    """Label value -> class name (the name used in metric keys)."""
    per_case: list[dict]
    mean: dict[str, float]
    undefined: dict[str, int]
    """Metric key -> cases where it is NaN (left out of the mean)."""
    foreground_mean: dict[str, float]
    unmatched_labels: list[str] = field(default_factory=list)
    """Label files without a prediction (not scored)."""
    files: list[Path] = field(default_factory=list)


def nifti_files(folder: Path, what: str) -> dict[str, Path]:
    """Case (file name without its NIfTI ending) -> file, for the NIfTI files of ``folder``."""
    from dafnet.data.nifti import nifti_ending

    if not folder.is_dir():
        raise DafnetError(f"{what} {folder} does not exist" if not folder.exists()
                          else f"{what} {folder} is not a folder", hint="give a folder of .nii.gz files")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        ending = nifti_ending(path)
        if ending is None or path.name.startswith(".") or path.is_dir():
            continue
        case = path.name[: -len(ending)]
        if case in found:
            raise DafnetError(f"{what} {folder} holds both {found[case].name} and {path.name}",
                              hint="keep one file per case")
        found[case] = path
    return found


def parse_labels(text: str | None) -> list[int] | None:
    """``--labels 1,2,3`` -> [1, 2, 3]; None when not given."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
        raise DafnetError(f"--labels {text!r} is not a list of distinct label values >= 1",
                          hint="e.g. --labels 1,2,3 (0 is the background)")
    return values


def class_names_near(labels_dir: Path) -> dict[int, str]:
    """Label value -> name from a dataset.json in the labels folder or its parent (nnU-Net's
    ``labels``: {name: value}); empty when there is none or it has no such mapping."""
    for candidate in (labels_dir / "dataset.json", labels_dir.parent / "dataset.json"):
        if candidate.is_file():
            try:
                raw = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return {}
            labels = raw.get("labels") if isinstance(raw, dict) else None
            if isinstance(labels, dict):
                return {int(v): str(k) for k, v in labels.items()
                        if isinstance(v, int) and not isinstance(v, bool) and v > 0}
            return {}
    return {}


def _read_mask(path: Path):
    from dafnet.data.nifti import read_volume

    volume = read_volume(path)
    data = volume.data
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        raise DafnetError(f"{path}: voxel values are not integers (a mask holds label values 0..L)",
                          hint="give label maps, not probabilities or images")
    return rounded.astype(np.int32), volume.spacing


def _slice_axis(shape, spacing) -> int:
    """The nnunet source's choice: an axis of length 1, else the largest spacing (ties: the last)."""
    from dafnet.data.preprocess import choose_slice_axis

    flat = [a for a in range(3) if shape[a] == 1]
    return flat[-1] if flat else choose_slice_axis(spacing)


def score_case(prediction: np.ndarray, truth: np.ndarray, spacing, labels: list[int],
               chunk: int = 16) -> dict:
    """The metrics of one case (see the module docstring) for the label ``labels``:
    ``{"dice": float, "dice3d": {value: float}, "hd95": {value: float}}``. Values outside
    ``labels`` count as background. Slices are scored ``chunk`` at a time."""
    import torch
    import torch.nn.functional as F

    from dafnet.metrics.dice import class_overlaps_per_slice, dice_3d_per_volume, paper_dice_per_slice
    from dafnet.metrics.hd95 import hd95

    lookup = np.zeros(max(int(prediction.max()), int(truth.max()), max(labels)) + 1, dtype=np.int64)
    lookup[labels] = np.arange(1, len(labels) + 1)  # chosen values -> 1..L, anything else -> 0
    axis = _slice_axis(prediction.shape, spacing)
    pred = np.moveaxis(lookup[prediction.clip(0)], axis, 0)
    true = np.moveaxis(lookup[truth.clip(0)], axis, 0)
    paper, counts = [], []
    for start in range(0, pred.shape[0], chunk):
        p = torch.from_numpy(np.ascontiguousarray(pred[start:start + chunk]))
        t = torch.from_numpy(np.ascontiguousarray(true[start:start + chunk]))
        one_hot = F.one_hot(p, len(labels) + 1).permute(0, 3, 1, 2).float()  # its arg-max is p
        paper.append(paper_dice_per_slice(one_hot, t))
        counts.append(class_overlaps_per_slice(one_hot, t))
    counts = [torch.cat([c[k] for c in counts]).numpy() for k in range(3)]
    dice3d = dice_3d_per_volume(*counts, ["case"] * pred.shape[0])["case"]
    return {"dice": 100 * float(torch.cat(paper).mean()),
            "dice3d": {v: float(100 * dice3d[i]) for i, v in enumerate(labels)},
            "hd95": {v: hd95(prediction == v, truth == v, spacing) for v in labels}}


def evaluate_folder(predictions: str | Path, labels_dir: str | Path, labels: list[int] | None = None,
                    progress=None) -> FolderEvaluation:
    """Score every prediction of ``predictions`` against its label file (see the module docstring).

    ``labels``: the label values to score (default: those of a dataset.json in the labels folder
    or its parent, else every nonzero value in the label and prediction files). ``progress(case)``
    is called before each case.
    """
    predictions, labels_dir = Path(predictions).expanduser(), Path(labels_dir).expanduser()
    predicted = nifti_files(predictions, "predictions folder")
    truths = nifti_files(labels_dir, "labels folder")
    if not predicted:
        raise DafnetError(f"predictions folder {predictions} holds no NIfTI files (.nii.gz or .nii)",
                          hint="give the folder dafnet predict (or another tool) wrote the masks to")
    for case, path in predicted.items():
        if case not in truths:
            raise DafnetError(f"prediction {path} has no label file {case}.nii.gz in {labels_dir}",
                              hint="predictions and labels are matched by file name")
    declared = class_names_near(labels_dir)
    chosen = labels or sorted(declared) or None
    scores = {}
    for case, path in predicted.items():
        if progress is not None:
            progress(case)
        prediction, spacing = _read_mask(path)
        truth, truth_spacing = _read_mask(truths[case])
        if prediction.shape != truth.shape:
            raise DafnetError(f"prediction {path} has shape {prediction.shape}, its label {truths[case]} "
                              f"{truth.shape}", hint="predictions must be on their label's voxel grid")
        if not np.allclose(spacing, truth_spacing, rtol=0.0, atol=SPACING_TOLERANCE_MM):
            raise DafnetError(f"prediction {path} has voxel spacing {_mm(spacing)} mm, its label "
                              f"{truths[case]} {_mm(truth_spacing)} mm",
                              hint="predictions must be on their label's voxel grid")
        # without a label list, each case is scored on the values it holds: a value absent from
        # both masks of a case is NaN there and adds nothing to the pooled Dice
        present = chosen or sorted(int(v) for v in np.union1d(np.unique(prediction), np.unique(truth)) if v > 0)
        scores[case] = score_case(prediction, truth, truth_spacing, present) if present else \
            {"dice": 100.0, "dice3d": {}, "hd95": {}}
    values = chosen or sorted({v for s in scores.values() for v in s["dice3d"]})
    if not values:
        raise DafnetError(f"no label value other than 0 in the labels of {labels_dir} or the predictions, "
                          "and no dataset.json naming classes", hint="give the values with --labels 1,2,...")
    names = {v: declared.get(v, f"label{v}") for v in values}
    rows = [{"case": case, "dice": s["dice"],
             **{f"dice3d_{names[v]}": s["dice3d"].get(v, float("nan")) for v in values},
             **{f"hd95_{names[v]}": s["hd95"].get(v, float("nan")) for v in values}}
            for case, s in scores.items()]
    return _summarise(rows, names, sorted(set(truths) - set(predicted)))


def _summarise(rows: list[dict], labels: dict[int, str], unmatched: list[str]) -> FolderEvaluation:
    keys = [k for k in rows[0] if k != "case"]
    mean, undefined = {}, {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean[key] = float(finite.mean()) if finite.size else float("nan")
        undefined[key] = int(values.size - finite.size)
    foreground = {}
    for metric in ("dice3d", "hd95"):
        values = np.array([mean[f"{metric}_{n}"] for n in labels.values()])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            foreground[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return FolderEvaluation(labels, rows, mean, undefined, foreground, unmatched)


def _mm(spacing) -> str:
    return " x ".join(f"{float(s):g}" for s in spacing)


# ---------------------------------------------------------------- writing
def output_paths(out: Path) -> tuple[Path, Path]:
    """(summary.json, per-case CSV) for ``--out``: a ``.json`` file (the CSV beside it, same
    name ending ``.csv``) or a folder (``summary.json`` and ``per_case.csv`` in it)."""
    from dafnet.fsutil import check_output_folder

    if out.suffix.lower() == ".json":
        if out.is_dir():
            raise DafnetError(f"--out {out} is a folder, not a .json file", hint="give another name")
        check_output_folder(out.parent, "--out's folder")
        return out, out.with_suffix(".csv")
    check_output_folder(out, "--out")
    return out / "summary.json", out / "per_case.csv"


def write_results(result: FolderEvaluation, out: Path, predictions: Path, labels_dir: Path) -> list[Path]:
    """Write the summary JSON and the per-case CSV; returns their paths."""
    summary_path, csv_path = output_paths(out)
    summary = {
        "predictions": str(predictions), "labels_folder": str(labels_dir),
        "labels": {str(v): n for v, n in result.labels.items()}, "cases": len(result.per_case),
        "units": {"dice": "percent", "dice3d": "percent", "hd95": "mm"},
        "mean": result.mean, "undefined": result.undefined, "foreground_mean": result.foreground_mean,
        "labels_without_prediction": result.unmatched_labels,
        "per_case": result.per_case,
    }
    try:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(_finite_or_none(summary), indent=2) + "\n", encoding="utf-8")
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(result.per_case[0]))
            writer.writeheader()
            writer.writerows(result.per_case)
    except OSError as exc:
        raise DafnetError(f"cannot write {summary_path.parent}: {exc.strerror or exc}",
                          hint="check --out") from exc
    result.files = [summary_path, csv_path]
    return result.files


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value
