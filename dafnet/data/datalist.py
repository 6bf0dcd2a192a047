"""Data source ``datalist``: a MONAI/MSD-style datalist JSON naming NIfTI files per modality,
read through :class:`dafnet.data.staging.StagedNnUNet` (as every reader of NIfTI files is). See
docs/data.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from pydantic import Field, create_model

from dafnet.data.nnunet_layout import read_json_object
from dafnet.data.plans import Survey, header_spacing
from dafnet.data.preprocess import PreprocessRecord
from dafnet.data.preprocessed import PreprocessedSource
from dafnet.data.staging import StagedCase, StagedNnUNet, preprocessing_fields, preprocessing_values
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Params, Subject


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
