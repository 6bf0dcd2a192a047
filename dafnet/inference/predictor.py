"""Segment NIfTI cases with an exported model (``dafnet predict``).

Each case is read through the nnunet source's preprocessing with the export's recipe params
(:class:`dafnet.data.staging.StagedNnUNet`; labels are never read), keeping each slice's whole
field of view. The target's slices are paired with the nearest slice of every other sequence
given; the method runs in eval mode on sliding windows at the training crop size
(:mod:`dafnet.inference.sliding_window`), the same window cut from every sequence, with the
probabilities blended by a Gaussian (``mirror``: averaged over the in-plane flips too); the
probabilities of the chosen prediction type are mapped back to the target file's original grid
with the volume's :class:`~dafnet.data.preprocess.PreprocessRecord`, and their argmax is written
as a uint8 mask with an overlay PNG (:mod:`dafnet.inference.combine`, which also averages the
exports of an ensemble: :mod:`dafnet.inference.ensemble`).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dafnet.data.plans import exported_spacing
from dafnet.data.slice_pairing import nearest_slices
from dafnet.data.staging import PREPROCESS_KEYS, StagedCase, StagedNnUNet, preprocessing_values
from dafnet.errors import DafnetError
from dafnet.inference.combine import CaseProbabilities, CaseResult, combine
from dafnet.inference.inputs import InputCases, resolve_channels
from dafnet.inference.sliding_window import mirrored, sliding_window_inference, window_positions
from dafnet.interfaces import Volume

Mode = Literal["single", "fused"]


class Predictor:
    """An exported model with the preprocessing its recipe used."""

    def __init__(self, export: str | Path, mode: Mode = "fused", target: str | None = None,
                 batch_size: int = 16, device: str | torch.device | None = None,
                 overlap: float = 0.5, mirror: bool = False) -> None:
        from dafnet.config.schema import Recipe
        from dafnet.engine.export import load_export, read_index

        if mode not in ("single", "fused"):
            raise DafnetError(f"unknown --mode {mode!r}", hint="use single or fused")
        if batch_size < 1:
            raise DafnetError(f"--batch-size must be >= 1, got {batch_size}")
        if not 0.0 <= overlap < 1.0:
            raise DafnetError(f"--overlap must be in [0, 1), got {overlap}",
                              hint="the fraction of a window its neighbours share, e.g. 0.5")
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
        self.export = Path(export)
        self.mode, self.batch_size, self.overlap, self.mirror = mode, batch_size, overlap, mirror
        self.window = tuple(int(n) for n in index["facts"]["image_size"])
        """The networks' training crop (H, W): the sliding window's size."""
        source = self.recipe.data.source
        self.channel_selection = source.params.get("channels")
        self.label_map = source.params.get("label_map")
        self.note = None
        if all(k in source.params for k in PREPROCESS_KEYS):
            self.preprocessing = preprocessing_values(source.params)
            self.preprocessing["spacing_mm"] = exported_spacing(
                self.preprocessing["spacing_mm"], index.get("plans"), f"export {export}")
        else:
            size = tuple(index["facts"]["image_size"])
            self.preprocessing = {"image_size": size, "spacing_mm": None}
            self.note = (f"the export was trained on data source {source.name!r}, which has no NIfTI "
                         f"preprocessing params: using the nnunet source's defaults at {size[0]}x{size[1]}")

    # ------------------------------------------------------------ input mapping
    def channels(self, inputs: InputCases) -> dict[str, int]:
        """Export modality -> input channel index, for the modalities the input has."""
        return resolve_channels(inputs.info.channel_names, self.channel_selection, self.modalities)

    def sequences(self, inputs: InputCases, ignore_unknown: bool = False,
                  known: set[int] | None = None) -> dict[str, int]:
        """Export modality -> input channel index; errors when the target or a sequence is unknown
        (``known``: the channels any export of an ensemble knows; default this export's)."""
        found = self.channels(inputs)
        used = {c for files in inputs.cases.values() for c in files}
        unknown = sorted(used - (known if known is not None else set(found.values())))
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
    def predict_volumes(self, volumes: dict[str, Volume],
                        windows: dict[str, tuple[int, int]] | None = None) -> tuple[np.ndarray, str]:
        """(S, H, W) class indices for the target volume and the prediction type used.

        Every other volume given is paired by slice position (nearest slice) and fused; with
        ``mode="single"`` or no other volume the single-modality prediction is used. The target's
        whole (H, W) grid is covered by sliding windows at the training crop size (see
        :meth:`predict_probabilities` for ``windows``).
        """
        kind, chunks = self._blend(volumes, windows)
        return np.concatenate([p.argmax(dim=1).to("cpu", torch.uint8).numpy() for p in chunks]), kind

    def predict_probabilities(self, volumes: dict[str, Volume],
                              windows: dict[str, tuple[int, int]] | None = None) -> tuple[np.ndarray, str]:
        """(S, L + 1, H, W) blended class probabilities of the target volume, and the prediction type.

        ``windows``: modality -> top-left pixel of the training crop window in that volume's
        (H, W) grid (the records' ``window``); default (0, 0). The other sequences are shifted so
        that their windows lie on the target's, as the training crops did, then the same
        sliding window is cut from all of them.
        """
        kind, chunks = self._blend(volumes, windows)
        return np.concatenate([p.cpu().numpy() for p in chunks]), kind

    def _blend(self, volumes, windows):
        target = volumes[self.target]
        others = {m: v for m, v in volumes.items() if m != self.target and m in self.modalities}
        kind = "fused" if self.mode == "fused" and others else "single"
        if kind == "single":
            others = {}
        pairs = {m: nearest_slices(target.slice_positions, v.slice_positions) for m, v in others.items()}
        windows = windows or {}
        origin = windows.get(self.target) or (0, 0)
        shape = target.image.shape[1:]
        shifts = {m: tuple(a - b for a, b in zip(windows.get(m) or (0, 0), origin)) for m in others}

        def predict(images: dict[str, torch.Tensor]) -> torch.Tensor:  # eval mode, no_grad: the method's
            return self.method.predict(images, self.target)[kind]

        if self.mirror:
            predict = mirrored(predict)

        def chunks():
            for start in range(0, target.num_slices, self.batch_size):
                stop = min(start + self.batch_size, target.num_slices)
                images = {self.target: self._tensor(target.image[start:stop])}
                images.update({m: self._tensor(shifted(v.image[pairs[m][start:stop]], shifts[m], shape))
                               for m, v in others.items()})
                yield sliding_window_inference(images, self.window, predict, self.overlap, self.batch_size)

        return kind, chunks()

    def window_count(self, shape: tuple[int, int]) -> int:
        """Sliding-window positions over an (H, W) slice."""
        padded = tuple(max(s, w) for s, w in zip(shape, self.window))
        return len(window_positions(padded, self.window, self.overlap))

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).unsqueeze(1).to(self.device)

    # ------------------------------------------------------------ one case from files
    def case_probabilities(self, case: str, files: dict[str, Path]) -> CaseProbabilities:
        """Read ``files`` (modality -> image) and predict: the class probabilities on the target
        file's grid (:meth:`~dafnet.data.preprocess.PreprocessRecord.restore_probabilities`)."""
        present = [m for m in self.modalities if m in files]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped constant slices and the like: not the user's concern here
            with StagedNnUNet({case: StagedCase({m: files[m] for m in present}, {})}, present,
                              self.class_names, self.preprocessing) as staged:
                volumes = staged.load(field_of_view=True)[0].volumes
                windows = {m: staged.records[(case, m)].window for m in present}
                record = staged.records[(case, self.target)]
        probabilities, kind = self.predict_probabilities(volumes, windows)
        used = [self.target] + ([m for m in present if m != self.target] if kind == "fused" else [])
        return CaseProbabilities(record.restore_probabilities(probabilities), kind, used,
                                 volumes[self.target].image, record, self.window_count(probabilities.shape[2:]))

    def predict_case(self, case: str, files: dict[str, Path], out_dir: Path | None = None,
                     save_probabilities: bool = False) -> CaseResult:
        """Read ``files`` (modality -> image), predict, and write ``<case>.nii.gz`` and
        ``<case>_overlay.png`` (and ``<case>.npz`` + ``<case>.json`` with ``save_probabilities``)
        under ``out_dir`` (nothing is written when it is None)."""
        began = time.perf_counter()
        result = combine(case, [self.case_probabilities(case, files)], files[self.target], self.class_names,
                         out_dir, save_probabilities, {"exports": [str(self.export)], "mirror": self.mirror})
        result.seconds = time.perf_counter() - began
        return result

    def cases(self, inputs: InputCases, ignore_unknown: bool = False,
              known: set[int] | None = None) -> tuple[dict[str, dict[str, Path]], list[str]]:
        """(case -> modality -> file for the cases with a target image, cases without one)."""
        found = self.sequences(inputs, ignore_unknown, known)
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


def shifted(stack: np.ndarray, shift: tuple[int, int], shape: tuple[int, int], fill: float = -1.0) -> np.ndarray:
    """(S, H, W) stack whose pixel (r, c) is ``stack[:, r + shift[0], c + shift[1]]`` (``fill``
    where that lies outside), ``shape`` = (H, W): another sequence put on the target's grid."""
    out = np.full((stack.shape[0], *shape), fill, dtype=np.float32)
    src = [(max(0, d), min(n, h + d)) for d, n, h in zip(shift, stack.shape[1:], shape)]
    if all(a < b for a, b in src):
        (r0, r1), (c0, c1) = src
        out[:, r0 - shift[0]:r1 - shift[0], c0 - shift[1]:c1 - shift[1]] = stack[:, r0:r1, c0:c1]
    return out


def check_headers(cases: dict[str, dict[str, Path]]) -> None:
    """Open every header first, so a broken file stops the run before anything is written."""
    from dafnet.data.nifti import read_header

    for files in cases.values():
        for path in files.values():
            read_header(path)
