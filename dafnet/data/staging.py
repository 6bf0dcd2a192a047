"""Staging arbitrary NIfTI files for the ``nnunet`` source: :class:`StagedNnUNet`, a temporary
nnU-Net raw folder of links to the files, read by the ``nnunet`` source itself, so every reader
(``datalist``, ``hf_datasets``, ``dafnet predict``, ``dafnet data check``) orients, normalises,
resamples, crops and checks exactly as training on an nnU-Net folder does. Messages, warnings
and records name the user's files, not the links. Also the nnunet source's preprocessing params,
which every source of NIfTI files shares. See docs/data.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dafnet.data.nifti import nifti_ending
from dafnet.data.nnunet import NnUNetDataSource
from dafnet.data.nnunet_layout import read_dataset_json
from dafnet.data.preprocess import PreprocessRecord
from dafnet.errors import DafnetError
from dafnet.interfaces import Subject

PREPROCESS_KEYS = tuple(k for k in NnUNetDataSource.Params.model_fields if k not in ("root", "channels"))
"""The nnunet source's preprocessing params, shared by every source that reads NIfTI files."""


def preprocessing_fields() -> dict:
    """The nnunet source's preprocessing fields, for ``pydantic.create_model``."""
    fields = NnUNetDataSource.Params.model_fields
    return {k: (fields[k].annotation, fields[k]) for k in PREPROCESS_KEYS}


def preprocessing_values(params) -> dict:
    """The preprocessing values of a params model or mapping (missing keys: the defaults; an
    explicit null is kept, e.g. ``spacing_mm: null``, whose default is ``auto``)."""
    if isinstance(params, Mapping):
        return {k: params[k] for k in PREPROCESS_KEYS if k in params}
    return {k: getattr(params, k) for k in PREPROCESS_KEYS if hasattr(params, k)}


# ---------------------------------------------------------------- staging
@dataclass(frozen=True)
class StagedCase:
    """The files of one case: modality -> image path, modality -> label path, or one shared label."""

    images: dict[str, Path]
    labels: dict[str, Path]
    shared_label: Path | None = None


class StagedNnUNet:
    """A temporary nnU-Net raw folder of links to ``cases``, read with the nnunet source.

    ``with StagedNnUNet(cases, modalities, class_names, params) as staged: subjects = staged.load()``;
    ``staged.records[(case, modality)]`` undo the preprocessing (their ``source`` is the user's file).
    """

    def __init__(self, cases: Mapping[str, StagedCase], modalities: Sequence[str],
                 class_names: Sequence[str], params: Mapping,
                 descriptions: Mapping[str, str] | None = None,
                 classes_from: str | Path | None = None) -> None:
        self.descriptions = {str(k): v for k, v in (descriptions or {}).items()}
        """File path -> how messages name it (default the path itself)."""
        self.cases, self.modalities, self.class_names = dict(cases), list(modalities), list(class_names)
        self.classes_from = str(classes_from) if classes_from is not None else None
        """The file declaring ``class_names``, named where messages would name the staged
        dataset.json; default: the dataset.json of the nnU-Net folder the images are in (when
        its classes are these), else the class list itself."""
        self.params = {k: v for k, v in params.items() if k in PREPROCESS_KEYS}
        self.records: dict[tuple[str, str], PreprocessRecord] = {}
        self._tmp: Path | None = None
        self._names: dict[str, str] = {}
        """Staged path or quoted staged case id -> what the user knows it as."""

    def __enter__(self) -> StagedNnUNet:
        self._tmp = Path(tempfile.mkdtemp(prefix="dafnet-staged-"))
        try:
            self._stage(self._tmp)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _stage(self, root: Path) -> None:
        (root / "imagesTr").mkdir()
        (root / "labelsTr").mkdir()
        self._ids = {}
        for n, (case, files) in enumerate(self.cases.items()):
            staged = f"case{n:05d}"
            self._ids[staged] = case
            self._names[f"{staged!r}"] = repr(case)
            for modality, path in files.images.items():
                channel = self.modalities.index(modality)
                self._link(path, root / "imagesTr", f"{staged}_{channel:04d}")
                if modality in files.labels:
                    self._link(files.labels[modality], root / "labelsTr", f"{staged}_{channel:04d}")
            if files.shared_label is not None:
                self._link(files.shared_label, root / "labelsTr", staged)
            self._names[f"labelsTr/{staged}_XXXX"] = _per_channel_labels(case, files.shared_label)
        (root / "dataset.json").write_text(json.dumps({
            "channel_names": {str(i): m for i, m in enumerate(self.modalities)},
            "labels": {"background": 0, **{c: i + 1 for i, c in enumerate(self.class_names)}}}))
        self._names[str(root / "dataset.json")] = self.classes_from or self._classes_file() or (
            "the classes " + ", ".join(f"{i}={c}" for i, c in enumerate(["background", *self.class_names])))

    def _classes_file(self) -> str | None:
        """The dataset.json of the nnU-Net folder holding every image, when it declares these classes."""
        images = [Path(p) for c in self.cases.values() for p in c.images.values()]
        roots = {p.parent.parent for p in images}
        if len(roots) != 1 or any(p.parent.name != "imagesTr" for p in images):
            return None
        root = roots.pop()
        if not (root / "dataset.json").is_file():
            return None
        try:
            declared = read_dataset_json(root)
        except DafnetError:
            return None
        return str(declared.path) if list(declared.class_names) == self.class_names else None

    def _link(self, source: Path, folder: Path, stem: str) -> None:
        source = Path(source)
        ending = nifti_ending(source)
        if ending is None:
            raise DafnetError(f"{source} is not a NIfTI file (.nii or .nii.gz)",
                              hint="convert it to NIfTI (e.g. with SimpleITK or nibabel)")
        if not source.is_file():
            raise DafnetError(f"{source} does not exist", hint="check the path")
        link = folder / f"{stem}{ending}"
        try:
            os.symlink(source.resolve(), link)
        except OSError:  # no symlinks here (e.g. Windows without the privilege)
            try:
                os.link(source, link)
            except OSError:
                shutil.copyfile(source, link)
        self._names[str(link)] = self.descriptions.get(str(source), str(source))

    def translate(self, text: str | None) -> str | None:
        """``text`` with staged paths and case ids replaced by the user's."""
        if text is None:
            return None
        for staged, real in sorted(self._names.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(staged, real)
        return text

    def load(self, slice_axis=None, reorient=None, field_of_view: bool = False) -> list[Subject]:
        """Read and preprocess every case (ids and records translated back); ``field_of_view``:
        keep each slice's whole field of view (see :class:`NnUNetDataSource`)."""
        params = dict(self.params)
        if slice_axis is not None:
            params["slice_axis"] = slice_axis
        if reorient is not None:
            params["reorient"] = reorient
        params["label_map"] = {k: v for k, v in (params.get("label_map") or {}).items()
                               if k == "*" or k in self.modalities} or None
        caught: list = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                source = NnUNetDataSource(NnUNetDataSource.Params(root=str(self._tmp), **params),
                                          field_of_view=field_of_view)
                subjects = source.load()
        except DafnetError as exc:
            raise DafnetError(self.translate(exc.message), hint=self.translate(exc.hint)) from exc
        finally:
            for w in caught:
                warnings.warn(self.translate(str(w.message)), w.category, stacklevel=3)
        out = []
        for subject in subjects:
            case = self._ids[subject.id]
            for modality in subject.volumes:
                record = source.record(subject.id, modality)
                self.records[(case, modality)] = replace(record, source=self.translate(record.source))
            out.append(Subject(id=case, volumes=subject.volumes))
        return out


def _per_channel_labels(case: str, shared_label: Path | None) -> str:
    """How a hint names the per-channel labels of ``case`` (in place of the staged
    ``labelsTr/<case>_XXXX``): the nnU-Net file names when its label is nnU-Net's
    labelsTr/<case>.nii.gz, else the datalist's per-sequence "label" mapping."""
    if shared_label is not None and Path(shared_label).parent.name == "labelsTr" and \
            Path(shared_label).name[: -len(nifti_ending(shared_label) or "")] == case:
        return f"labelsTr/{case}_XXXX"
    return f'(a "label": {{sequence: file}} mapping in the entry of {case!r})'
