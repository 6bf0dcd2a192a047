"""One case's prediction from one or more exports: their class probabilities on the target file's
grid are averaged (an ensemble, as nnU-Net averages its folds' softmax), the mask is their argmax,
and the mask, the overlay and (``--save-probabilities``) the probabilities are written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dafnet.data.preprocess import PreprocessRecord
from dafnet.inference.outputs import output_names, write_mask, write_overlay, write_probabilities


@dataclass
class CaseProbabilities:
    """One export's prediction of one case."""

    probabilities: np.ndarray
    """(K, X, Y, Z) float32 class probabilities on the target file's voxel grid (K = classes + 1)."""
    kind: str
    """The prediction type used: ``fused``, or ``single`` when only the target was given."""
    sequences: list[str]
    image: np.ndarray
    """(S, H, W) preprocessed target image (the networks' grid)."""
    record: PreprocessRecord
    """How the target's stack was made from its file."""
    windows: int
    """Sliding-window positions per slice."""


@dataclass
class CaseResult:
    """What was predicted for one case."""

    case: str
    mode: str
    """The prediction type used: ``fused``, or ``single`` when only the target was given (both,
    ``fused+single``, when the exports of an ensemble used different ones)."""
    sequences: list[str]
    slices: int
    """Slices of the target stack the networks saw."""
    foreground: dict[str, int]
    """Class name -> voxels of the written mask."""
    seconds: float
    mask_path: Path | None = None
    overlay_path: Path | None = None
    windows: int = 1
    """Sliding-window positions per slice."""
    prediction: np.ndarray | None = field(default=None, repr=False)
    """(S, H, W) class indices on the network grid (the target's whole field of view at the
    networks' spacing; of the first export of an ensemble): the mask mapped back there."""
    probabilities_path: Path | None = None
    """``<case>.npz`` with ``--save-probabilities`` (its geometry: ``<case>.json`` beside it)."""


def combine(case: str, parts: list[CaseProbabilities], target_file: Path, class_names, out_dir: Path | None,
            save_probabilities: bool = False, info: dict | None = None) -> CaseResult:
    """The mean of the ``parts``' probabilities, its argmax as the mask; the files written to
    ``out_dir`` (none when it is None). ``info`` goes into the probabilities' JSON."""
    mean = parts[0].probabilities if len(parts) == 1 else np.mean([p.probabilities for p in parts], axis=0)
    mask = mean.argmax(axis=0).astype(np.uint8)
    first = parts[0]
    prediction = first.record.preprocess_label(mask)
    counts = np.bincount(mask.ravel(), minlength=len(class_names) + 1)
    kinds = list(dict.fromkeys(p.kind for p in parts))
    sequences = list(dict.fromkeys(m for p in parts for m in p.sequences))
    result = CaseResult(case, "+".join(kinds), sequences, int(prediction.shape[0]),
                        {n: int(counts[i + 1]) for i, n in enumerate(class_names)}, 0.0,
                        windows=first.windows, prediction=prediction)
    if out_dir is None:
        return result
    names = output_names(case, save_probabilities)
    result.mask_path = write_mask(out_dir / names[0], mask, target_file)
    result.overlay_path = write_overlay(out_dir / names[1], first.image, prediction, class_names,
                                        f"{case}: {sequences[0]} ({result.mode}: {'+'.join(sequences)})"
                                        + (f", {len(parts)} exports" if len(parts) > 1 else ""))
    if save_probabilities:
        geometry = {"case": case, "classes": ["background", *class_names], "prediction": result.mode,
                    "sequences": sequences, **(info or {})}
        result.probabilities_path, _ = write_probabilities(out_dir / names[2], out_dir / names[3], mean,
                                                           target_file, geometry)
    return result
