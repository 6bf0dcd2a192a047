"""Data source ``datalist``: a MONAI/MSD-style datalist JSON naming NIfTI files per modality.

Also the shared reader of arbitrary NIfTI files, :class:`StagedNnUNet`: a temporary nnU-Net raw
folder of links to the files, read by the ``nnunet`` source itself, so every reader
(``datalist``, ``hf_datasets``, ``dafnet predict``, ``dafnet data check``) orients, normalises,
resamples, crops and checks exactly as training on an nnU-Net folder does. Messages, warnings
and records name the user's files, not the links. See docs/data.md.
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

from pydantic import Field, create_model

from dafnet.data.nifti import nifti_ending
from dafnet.data.nnunet import NnUNetDataSource, PreprocessedSource
from dafnet.data.nnunet_layout import read_dataset_json, read_json_object
from dafnet.data.plans import Survey, header_spacing
from dafnet.data.preprocess import PreprocessRecord
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Params, Subject

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


# ---------------------------------------------------------------- the datalist source
def _read_json(path: Path) -> dict:
    return read_json_object(path, f"datalist {path} (data.source.params.path) does not exist",
                            "see docs/data.md for the datalist format")


def _class_names(path: Path, labels) -> tuple[str, ...]:
    """MSD's {"0": "background", "1": "lv"} or nnU-Net's {"background": 0, "lv": 1}."""
    if not isinstance(labels, dict) or not labels:
        raise DafnetError(f"{path}: 'labels' must map values to class names, e.g. "
                          '{"0": "background", "1": "lesion"}')
    if all(str(k).isdigit() for k in labels):
        by_value = {int(k): str(v) for k, v in labels.items()}
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        by_value = {int(v): str(k) for k, v in labels.items()}
    else:
        raise DafnetError(f"{path}: 'labels' must be {{value: name}} or {{name: value}} with integer values")
    if sorted(by_value) != list(range(len(by_value))) or len(by_value) < 2:
        raise DafnetError(f"{path}: label values must be 0..L without gaps (0 = background, L >= 1), "
                          f"got {sorted(by_value)}")
    return tuple(by_value[v] for v in range(1, len(by_value)))


class DatalistDataSource(PreprocessedSource):
    """Subjects from a datalist JSON: per entry, one NIfTI image (and label) per modality."""

    Params = create_model(
        "Params", __base__=Params, __module__=__name__,
        path=(str, Field(description="the datalist JSON file; relative file paths in it start at its folder")),
        sections=(list[str], Field(["training"], min_length=1,
                                   description="which lists of the JSON to read (e.g. training, validation)")),
        modalities=(list[str] | None, Field(None, description="modalities to read, in this order; default "
                                                             "the JSON's 'modality' (else every image key)")),
        **preprocessing_fields(),
    )
    Params.__qualname__ = "DatalistDataSource.Params"

    def __init__(self, params, facts: Facts | None = None) -> None:
        super().__init__(params, facts if facts is not None else Facts())
        self.path = Path(params.path).expanduser()
        raw = _read_json(self.path)
        if "labels" not in raw:
            raise DafnetError(f"{self.path} lacks 'labels'", hint='add e.g. "labels": {"0": "background", '
                                                                  '"1": "lesion"}')
        self._class_names = _class_names(self.path, raw["labels"])
        self.cases = self._cases(raw)
        self._modalities = self._choose_modalities(raw)
        self._subjects: list[Subject] | None = None
        self._records: dict[tuple[str, str], PreprocessRecord] = {}

    @classmethod
    def facts_without_data(cls, params) -> dict:
        size = params.image_size
        facts: dict = {"image_size": (size, size) if isinstance(size, int) else tuple(size)}
        if params.modalities:
            facts["modalities"] = tuple(params.modalities)
        return facts

    @property
    def modalities(self) -> tuple[str, ...]:
        return self._modalities

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names


    def _selected(self) -> dict[str, StagedCase]:
        """The cases with an image of the chosen modalities, restricted to them."""
        cases = {}
        for case, files in self.cases.items():
            images = {m: p for m, p in files.images.items() if m in self._modalities}
            if images:
                labels = {m: p for m, p in files.labels.items() if m in images}
                cases[case] = StagedCase(images, labels, files.shared_label)
        if not cases:
            raise DafnetError(f"{self.path}: no entry has an image of {list(self._modalities)}")
        return cases

    def survey(self) -> Survey:
        survey = Survey()
        p = self.params
        for case, files in self._selected().items():
            survey.spacings[case] = {m: header_spacing(path, p.slice_axis, p.reorient)
                                     for m, path in files.images.items()}
            survey.labelled[case] = {m for m in files.images
                                     if m in files.labels or files.shared_label is not None}
        return survey

    def load(self) -> list[Subject]:
        if self._subjects is None:
            cases = self._selected()
            values = {**preprocessing_values(self.params), "spacing_mm": self.target_spacing()}
            with StagedNnUNet(cases, self._modalities, self._class_names, values,
                              classes_from=self.path) as staged:
                self._subjects = staged.load()
                self._records = staged.records
        return list(self._subjects)

    # ------------------------------------------------------------ parsing
    def _cases(self, raw: dict) -> dict[str, StagedCase]:
        cases: dict[str, StagedCase] = {}
        for section in self.params.sections:
            entries = raw.get(section)
            if not isinstance(entries, list):
                raise DafnetError(f"{self.path} has no list {section!r}",
                                  hint=f"lists here: {[k for k, v in raw.items() if isinstance(v, list)]}")
            for n, entry in enumerate(entries):
                where = f"{self.path}: {section}[{n}]"
                if not isinstance(entry, dict) or not isinstance(entry.get("image"), dict):
                    raise DafnetError(f"{where} needs \"image\": {{modality: path}}",
                                      hint="one NIfTI file per modality, e.g. {\"cine\": \"p01_cine.nii.gz\"}; "
                                           "4D multi-channel files (MSD) are not read")
                case = str(entry.get("id", f"{section}_{n:04d}"))
                if case in cases:
                    raise DafnetError(f"{where}: id {case!r} repeats", hint="give every entry its own \"id\"")
                label = entry.get("label")
                labels, shared = {}, None
                if isinstance(label, str):
                    shared = self._file(label)
                elif isinstance(label, dict):
                    unknown = sorted(set(label) - set(entry["image"]))
                    if unknown:
                        raise DafnetError(f"{where}: labels of {unknown} have no image")
                    labels = {str(m).lower(): self._file(p) for m, p in label.items() if p is not None}
                elif label is not None:
                    raise DafnetError(f"{where}: \"label\" must be {{modality: path}} or one path")
                images = {str(m).lower(): self._file(p) for m, p in entry["image"].items() if p is not None}
                cases[case] = StagedCase(images, labels, shared)
        return cases

    def _file(self, value) -> Path:
        if not isinstance(value, str) or not value:
            raise DafnetError(f"{self.path}: file paths must be strings, got {value!r}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.path.parent / path

    def _choose_modalities(self, raw: dict) -> tuple[str, ...]:
        present = list(dict.fromkeys(m for c in self.cases.values() for m in c.images))
        declared = raw.get("modality")
        if isinstance(declared, dict):
            declared = [str(declared[k]).lower() for k in sorted(declared, key=lambda k: (len(str(k)), str(k)))]
        elif isinstance(declared, list):
            declared = [str(m).lower() for m in declared]
        chosen = [m.lower() for m in self.params.modalities] if self.params.modalities else (declared or present)
        missing = [m for m in chosen if m not in present]
        if missing:
            raise DafnetError(f"{self.path}: no entry has an image of {missing}",
                              hint=f"modalities with images: {present}")
        if len(set(chosen)) != len(chosen):
            raise DafnetError(f"data.source.params.modalities repeat: {chosen}")
        ignored = [m for m in present if m not in chosen]
        if ignored and not self.params.modalities:  # a subset the recipe asked for is not news
            warnings.warn(f"{self.path}: images of {ignored} are not read: the JSON's \"modality\" declares "
                          f"{chosen} (misspelt image keys? list them there, or choose with "
                          "data.source.params.modalities)", UserWarning, stacklevel=2)
        return tuple(chosen)
