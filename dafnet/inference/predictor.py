"""Segment NIfTI cases with an exported model (``dafnet predict``).

Each case is read through the nnunet source's preprocessing with the export's recipe params
(:class:`dafnet.data.datalist.StagedNnUNet`; labels are never read), the target's slices are
paired with the nearest slice of every other sequence given, the method runs in eval mode in
batches, the argmax of the chosen prediction type is mapped back to the target file's original
grid with the volume's :class:`~dafnet.data.preprocess.PreprocessRecord`, and a uint8 mask and an
overlay PNG are written.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dafnet.data.datalist import PREPROCESS_KEYS, StagedCase, StagedNnUNet, preprocessing_values
from dafnet.data.pairing import nearest_slices
from dafnet.errors import DafnetError
from dafnet.inference.inputs import InputCases, resolve_channels
from dafnet.inference.outputs import output_names, write_mask, write_overlay
from dafnet.interfaces import Volume

Mode = Literal["single", "fused"]


@dataclass
class CaseResult:
    """What was predicted for one case."""

    case: str
    mode: str
    """The prediction type used: ``fused``, or ``single`` when only the target was given."""
    sequences: list[str]
    slices: int
    """Slices of the target stack the networks saw."""
    foreground: dict[str, int]
    """Class name -> voxels of the written mask."""
    seconds: float
    mask_path: Path | None = None
    overlay_path: Path | None = None
    prediction: np.ndarray | None = field(default=None, repr=False)
    """(S, H, W) class indices on the network grid."""


class Predictor:
    """An exported model with the preprocessing its recipe used."""

    def __init__(self, export: str | Path, mode: Mode = "fused", target: str | None = None,
                 batch_size: int = 16, device: str | torch.device | None = None) -> None:
        from dafnet.config.schema import Recipe
        from dafnet.engine.export import load_export, read_index

        if mode not in ("single", "fused"):
            raise DafnetError(f"unknown --mode {mode!r}", hint="use single or fused")
        if batch_size < 1:
            raise DafnetError(f"--batch-size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        index = read_index(export)
        self.method = load_export(export, device=self.device)
        self.recipe = Recipe.model_validate(index["recipe"])
        self.modalities = tuple(self.method.modalities)
        self.class_names = tuple(index["facts"]["class_names"] or ())
        self.target = target or self.method.target
        if self.target not in self.modalities:
            raise DafnetError(f"--target {self.target!r} is not a sequence of the export",
                              hint=f"the export knows {list(self.modalities)}")
        self.mode, self.batch_size = mode, batch_size
        source = self.recipe.data.source
        self.channel_selection = source.params.get("channels")
        self.note = None
        if all(k in source.params for k in PREPROCESS_KEYS):
            self.preprocessing = preprocessing_values(source.params)
        else:
            size = tuple(index["facts"]["image_size"])
            self.preprocessing = {"image_size": size}
            self.note = (f"the export was trained on data source {source.name!r}, which has no NIfTI "
                         f"preprocessing params: using the nnunet source's defaults at {size[0]}x{size[1]}")

    # ------------------------------------------------------------ input mapping
    def sequences(self, inputs: InputCases, ignore_unknown: bool = False) -> dict[str, int]:
        """Export modality -> input channel index; errors when the target or a sequence is unknown."""
        found = resolve_channels(inputs.info.channel_names, self.channel_selection, self.modalities)
        used = {c for files in inputs.cases.values() for c in files}
        unknown = sorted(used - set(found.values()))
        if unknown and not ignore_unknown:
            names = [inputs.info.channel_names[c] for c in unknown]
            raise DafnetError(f"input sequences {names} of {inputs.info.path} are unknown to the export, "
                              f"which knows {list(self.modalities)}",
                              hint="remove their files, rename their channel_names, or pass --ignore-unknown")
        if self.target not in found or not any(found[self.target] in f for f in inputs.cases.values()):
            raise DafnetError(f"no case in {inputs.images_dir} has an image of the target sequence "
                              f"{self.target!r}", hint=f"channel_names of {inputs.info.path}: "
                              f"{list(inputs.info.channel_names.values())}; or choose another --target")
        return found

    # ------------------------------------------------------------ the networks
    def predict_volumes(self, volumes: dict[str, Volume]) -> tuple[np.ndarray, str]:
        """(S, H, W) class indices for the target volume and the prediction type used.

        Every other volume given is paired by slice position (nearest slice) and fused; with
        ``mode="single"`` or no other volume the single-modality prediction is used.
        """
        target = volumes[self.target]
        others = {m: v for m, v in volumes.items() if m != self.target and m in self.modalities}
        kind = "fused" if self.mode == "fused" and others else "single"
        if kind == "single":
            others = {}
        pairs = {m: nearest_slices(target.slice_positions, v.slice_positions) for m, v in others.items()}
        out = []
        for start in range(0, target.num_slices, self.batch_size):
            stop = min(start + self.batch_size, target.num_slices)
            images = {self.target: self._tensor(target.image[start:stop])}
            images.update({m: self._tensor(v.image[pairs[m][start:stop]]) for m, v in others.items()})
            probabilities = self.method.predict(images, self.target)[kind]
            out.append(probabilities.argmax(dim=1).to("cpu", torch.uint8).numpy())
        return np.concatenate(out), kind

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).unsqueeze(1).to(self.device)

    # ------------------------------------------------------------ one case from files
    def predict_case(self, case: str, files: dict[str, Path], out_dir: Path | None = None) -> CaseResult:
        """Read ``files`` (modality -> image), predict, and write ``<case>.nii.gz`` and
        ``<case>_overlay.png`` under ``out_dir`` (nothing is written when it is None)."""
        began = time.perf_counter()
        present = [m for m in self.modalities if m in files]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped constant slices and the like: not the user's concern here
            with StagedNnUNet({case: StagedCase({m: files[m] for m in present}, {})}, present,
                              self.class_names, self.preprocessing) as staged:
                volumes = staged.load()[0].volumes
                record = staged.records[(case, self.target)]
        prediction, kind = self.predict_volumes(volumes)
        mask = record.restore(prediction, "label")
        counts = np.bincount(mask.ravel(), minlength=len(self.class_names) + 1)
        used = [self.target] + ([m for m in present if m != self.target] if kind == "fused" else [])
        result = CaseResult(case, kind, used, int(prediction.shape[0]),
                            {n: int(counts[i + 1]) for i, n in enumerate(self.class_names)}, 0.0,
                            prediction=prediction)
        if out_dir is not None:
            mask_name, overlay_name = output_names(case)
            result.mask_path = write_mask(out_dir / mask_name, mask, files[self.target])
            result.overlay_path = write_overlay(
                out_dir / overlay_name, volumes[self.target].image, prediction, self.class_names,
                f"{case}: {self.target} ({kind}: {'+'.join(result.sequences)})")
        result.seconds = time.perf_counter() - began
        return result

    def cases(self, inputs: InputCases, ignore_unknown: bool = False) -> tuple[dict[str, dict[str, Path]], list[str]]:
        """(case -> modality -> file for the cases with a target image, cases without one)."""
        found = self.sequences(inputs, ignore_unknown)
        usable, skipped = {}, []
        for case, channels in inputs.cases.items():
            files = {m: channels[c] for m, c in found.items() if c in channels}
            if self.target in files:
                usable[case] = files
            else:
                skipped.append(case)
        return usable, skipped


_DEVICE_HINT = "use cpu, cuda, cuda:N or mps, or leave --device out (cuda when present, else cpu)"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``--device`` checked before anything is loaded: one torch knows and this machine has."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DafnetError(f"--device {str(device)!r} is not a device name", hint=_DEVICE_HINT) from exc
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DafnetError(f"--device {str(device)!r}: CUDA is not available here ({why})",
                              hint="use --device cpu, or leave --device out")
        if parsed.index is not None and parsed.index >= count:
            raise DafnetError(f"--device {str(device)!r}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}", hint=_DEVICE_HINT)
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise DafnetError(f"--device {str(device)!r}: MPS is not available here", hint=_DEVICE_HINT)
    elif parsed.type != "cpu":
        raise DafnetError(f"--device {str(device)!r}: predict runs on cpu, cuda or mps", hint=_DEVICE_HINT)
    return parsed


def check_headers(cases: dict[str, dict[str, Path]]) -> None:
    """Open every header first, so a broken file stops the run before anything is written."""
    from dafnet.data.nifti import read_header

    for files in cases.values():
        for path in files.values():
            read_header(path)
