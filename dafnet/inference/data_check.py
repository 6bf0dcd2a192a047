"""``dafnet data check``: read every volume of a dataset as training would, one at a time, and
report per case what is there (sequences, shapes, spacings, labels, slice pairing) and what
cannot be used. Each volume goes through the nnunet source's own reading and preprocessing
(:class:`dafnet.data.staging.StagedNnUNet`), so the errors are the ones training would raise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dafnet.data.nifti import read_header
from dafnet.data.slice_pairing import nearest_slices
from dafnet.data.staging import StagedCase, StagedNnUNet
from dafnet.errors import DafnetError
from dafnet.interfaces import Volume


@dataclass
class VolumeReport:
    modality: str
    file: Path
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    slices: int | None = None
    """Slices kept after preprocessing."""
    labels: list[int] | None = None
    """Label values present (None: unlabelled)."""
    pairing_mm: tuple[float, float] | None = None
    """(median, max) distance from each target slice to the nearest slice of this sequence."""
    error: str | None = None


@dataclass
class CaseReport:
    case: str
    volumes: dict[str, VolumeReport] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.errors


def check_cases(cases: dict[str, StagedCase], modalities, class_names, params: dict,
                target: str, classes_from: Path | None = None) -> list[CaseReport]:
    """One report per case; every volume is read on its own so one broken file does not hide others.
    ``classes_from`` (a datalist JSON) is the file messages name as declaring the classes."""
    reports = []
    for case, files in cases.items():
        report = CaseReport(case)
        loaded: dict[str, Volume] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for modality in modalities:
                if modality not in files.images:
                    continue
                volume, info = _read_one(case, modality, files, class_names, params, classes_from)
                report.volumes[modality] = info
                if volume is None:
                    report.errors.append(f"{modality}: {info.error}")
                else:
                    loaded[modality] = volume
            if len(loaded) > 1:
                from dafnet.data.volume_checks import warn_if_normals_differ

                warn_if_normals_differ(case, loaded)
        report.warnings += list(dict.fromkeys(str(w.message) for w in caught))
        _pairing(report, loaded, target)
        missing = [m for m in modalities if m not in files.images]
        if target not in files.images:
            report.warnings.append(f"no {target!r} (target) image: the case is not used for the target's "
                                   "training or evaluation")
        elif missing:
            report.warnings.append(f"no {', '.join(missing)}: the case is left out of training streams "
                                   "(they need every sequence); evaluation and predict use what is there")
        reports.append(report)
    return reports


def _read_one(case: str, modality: str, files: StagedCase, class_names, params,
              classes_from: Path | None = None) -> tuple[Volume | None, VolumeReport]:
    path = files.images[modality]
    info = VolumeReport(modality, path)
    label = files.labels.get(modality)
    staged = StagedCase({modality: path}, {modality: label} if label else {},
                        None if label else files.shared_label)
    try:
        shape, affine = read_header(path)
        info.shape = shape
        info.spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        with StagedNnUNet({case: staged}, [modality], class_names, params, classes_from=classes_from) as reader:
            volume = reader.load()[0].volumes[modality]
    except DafnetError as exc:
        info.error = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        return None, info
    info.slices = volume.num_slices
    info.labels = None if volume.label is None else [int(v) for v in np.unique(volume.label)]
    return volume, info


def _pairing(report: CaseReport, loaded: dict[str, Volume], target: str) -> None:
    if target not in loaded:
        return
    positions = loaded[target].slice_positions
    for modality, volume in loaded.items():
        if modality == target:
            continue
        nearest = nearest_slices(positions, volume.slice_positions)
        distance = np.abs(volume.slice_positions[nearest] - positions)
        report.volumes[modality].pairing_mm = (float(np.median(distance)), float(distance.max()))


def nnunet_cases(root: Path, channels) -> tuple[dict[str, StagedCase], tuple[str, ...], tuple[str, ...], list[str]]:
    """(cases, modalities, class names, layout warnings) of an nnU-Net raw folder, listed by the
    nnunet source's own code (``channels``: its param, checked as training checks it)."""
    from dafnet.data.nnunet import NnUNetDataSource
    from dafnet.data.nnunet_layout import discover_cases
    from dafnet.inference.inputs import resolve_channels

    source = NnUNetDataSource(NnUNetDataSource.Params(root=str(root), channels=channels))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = discover_cases(source.root, source.info)
    index = resolve_channels(source.info.channel_names, channels, source.modalities)
    cases = {}
    for case, files in listed.items():
        cases[case] = StagedCase({m: files.images[c] for m, c in index.items() if c in files.images},
                                 {m: files.labels[c] for m, c in index.items() if c in files.labels},
                                 files.shared_label)
    return cases, source.modalities, source.class_names, [str(w.message) for w in caught]


def load_check_input(path: Path | None, recipe: str | None):
    """(cases, modalities, class names, preprocessing params, default target, layout warnings) for
    ``dafnet data check PATH [--recipe R]``: PATH replaces the recipe's data folder (nnunet
    ``root``, datalist ``path``); without a recipe, PATH is read with the default params."""
    from dafnet.data.datalist import DatalistDataSource
    from dafnet.data.staging import preprocessing_values

    name, params, modalities, target = "nnunet", {}, None, None
    if recipe is not None:
        from dafnet.config import find_recipe, load_recipe

        resolved = load_recipe(find_recipe(recipe), [])
        name, params = resolved.data.source.name, dict(resolved.data.source.params)
        modalities, target = resolved.data.modalities, resolved.data.target
        if name not in ("nnunet", "datalist"):
            raise DafnetError(f"data check reads NIfTI data sources (nnunet, datalist); recipe {recipe} uses "
                              f"{name!r}", hint="check the files with the nnunet layout or a datalist instead")
    elif path is None:
        raise DafnetError("give a PATH or --recipe", hint="dafnet data check DATASET_FOLDER")
    elif path.suffix.lower() == ".json":
        name = "datalist"
    if path is not None:
        params["root" if name == "nnunet" else "path"] = str(path)
    if name == "nnunet":
        cases, found, class_names, notes = nnunet_cases(Path(params["root"]), params.get("channels"))
    else:
        source = DatalistDataSource(DatalistDataSource.Params(**params))
        cases, found, class_names, notes = source.cases, source.modalities, source.class_names, []
    modalities = tuple(modalities or found)
    return (cases, modalities, class_names, preprocessing_values(params), target or modalities[-1], notes)
