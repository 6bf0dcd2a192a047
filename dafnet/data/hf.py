"""Data source ``hf_datasets``: a Hugging Face ``datasets`` table of MR images.

``path`` is a folder written by ``Dataset.save_to_disk`` (or ``DatasetDict``: pick ``split``), a
parquet file or a folder of parquet files, or (online only) a hub dataset name. Params name one
image column per modality (and optionally one label column per modality), the subject-id column
and an optional slice-position column. A cell is an (S, H, W) stack, a 2D slice (rows of one
subject are stacked, ordered by the slice position or row order), or a NIfTI path (relative to
the dataset folder). Arrays become NIfTI stacks in a temporary folder with the given spacing,
then everything is read by the nnunet source's own preprocessing (:class:`StagedNnUNet`). See
docs/data.md.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from pydantic import Field, create_model

from dafnet.data.nnunet_writer import volume_to_nifti
from dafnet.data.preprocess import PreprocessRecord
from dafnet.data.preprocessed import Millimetres, PreprocessedSource
from dafnet.data.staging import StagedCase, StagedNnUNet, preprocessing_fields, preprocessing_values
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Params, Subject

_SPACING = (Millimetres | tuple[Millimetres, Millimetres] | None, Field(
    None, description="target in-plane spacing in mm (one value or [row, col]); null keeps each "
                      "file's (array cells: pixel_spacing_mm); auto is not offered here"))
_ARRAY_SLICE_AXIS = 2
"""NIfTI axis of the slices of a stack written by :func:`volume_to_nifti` (col, row, slice)."""


class HFDatasetsDataSource(PreprocessedSource):
    """Subjects from a local Hugging Face dataset (save_to_disk folder or parquet).

    For array cells, ``record(...).restore`` gives the (W, H, S) array of the temporary NIfTI
    stack: ``.transpose(2, 1, 0)`` is the (S, H, W) of the dataset.
    """

    Params = create_model(
        "Params", __base__=Params, __module__=__name__,
        path=(str, Field(description="save_to_disk folder, parquet file or folder, or a hub name (online)")),
        split=(str | None, Field(None, description="split of a DatasetDict / hub dataset (default: train)")),
        images=(dict[str, str], Field(min_length=1, description="{modality: image column}")),
        labels=(dict[str, str], Field(default_factory=dict, description="{modality: label column}")),
        class_names=(list[str], Field(min_length=1, description="names of the label values 1..L")),
        subject_column=(str | None, Field(None, description="subject-id column; null: every row is a subject")),
        slice_position_column=(str | None, Field(
            None, description="slice position (mm) of 2D-slice rows; null: row order, slice_spacing_mm apart")),
        pixel_spacing_mm=(float, Field(1.0, gt=0, le=100, description="in-plane spacing of array cells")),
        slice_spacing_mm=(float, Field(1.0, gt=0, le=100, description="slice spacing of array cells "
                                                                      "without a slice-position column")),
        **{**preprocessing_fields(), "spacing_mm": _SPACING},
    )
    Params.__qualname__ = "HFDatasetsDataSource.Params"

    def __init__(self, params, facts: Facts | None = None) -> None:
        super().__init__(params, facts if facts is not None else Facts())
        unknown = sorted(set(params.labels) - set(params.images))
        if unknown:
            raise DafnetError(f"data.source.params.labels names {unknown}, which have no image column")
        self._subjects: list[Subject] | None = None
        self._records: dict[tuple[str, str], PreprocessRecord] = {}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.params.images)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.params.class_names)

    @classmethod
    def facts_without_data(cls, params) -> dict:
        size = params.image_size
        return {"image_size": (size, size) if isinstance(size, int) else tuple(size),
                "modalities": tuple(params.images), "num_classes": len(params.class_names),
                "class_names": tuple(params.class_names)}

    # ------------------------------------------------------------ loading
    def load(self) -> list[Subject]:
        if self._subjects is None:
            table = self._open()
            groups = self._group(table)
            tmp = Path(tempfile.mkdtemp(prefix="dafnet-hf-"))
            try:
                self._subjects = self._read(groups, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return list(self._subjects)

    def _open(self):
        import datasets

        p = self.params
        path = Path(p.path).expanduser()
        try:
            if path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
                data = datasets.load_from_disk(str(path))
            elif path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
                files = sorted(map(str, path.glob("*.parquet"))) if path.is_dir() else str(path)
                data = datasets.Dataset.from_parquet(files)
            elif path.exists():
                raise DafnetError(f"{path} (data.source.params.path) is neither a save_to_disk folder nor parquet",
                                  hint="save with Dataset.save_to_disk(folder) or to_parquet(file)")
            elif Path(p.path).is_absolute() or p.path.startswith((".", "~")) or len(Path(p.path).parts) > 2:
                raise DafnetError(f"{path} (data.source.params.path) does not exist",
                                  hint="give a save_to_disk folder, a parquet file, or a hub name owner/name")
            else:
                data = datasets.load_dataset(p.path, split=p.split or "train")
        except DafnetError:
            raise
        except Exception as exc:  # datasets raises many kinds (offline, missing files)
            raise DafnetError(f"cannot open Hugging Face dataset {p.path}: {type(exc).__name__}: {exc}",
                              hint="give a local save_to_disk folder or parquet file "
                                   "(hub names need internet)") from exc
        if isinstance(data, datasets.DatasetDict):
            split = p.split or ("train" if "train" in data else next(iter(data)))
            if split not in data:
                raise DafnetError(f"{p.path} has no split {split!r}", hint=f"splits: {list(data)}")
            data = data[split]
        columns = [c for c in (*p.images.values(), *p.labels.values(), p.subject_column, p.slice_position_column)
                   if c is not None]
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise DafnetError(f"{p.path} has no column(s) {missing}", hint=f"columns: {data.column_names}")
        self._folder = path if path.is_dir() else path.parent
        return data.select_columns(list(dict.fromkeys(columns))).with_format("numpy")

    def _group(self, table) -> dict[str, list[dict]]:
        p = self.params
        groups: dict[str, list[dict]] = {}
        for n in range(len(table)):
            row = table[n]
            subject = f"row_{n:05d}" if p.subject_column is None else _scalar(row[p.subject_column])
            groups.setdefault(str(subject), []).append(row)
        return groups

    def _read(self, groups: dict[str, list[dict]], tmp: Path) -> list[Subject]:
        p = self.params
        arrays: dict[str, StagedCase] = {}
        paths: dict[str, StagedCase] = {}
        positions: dict[tuple[str, str], np.ndarray] = {}
        names: dict[str, str] = {}
        for subject, rows in groups.items():
            array_case, path_case = StagedCase({}, {}), StagedCase({}, {})
            for modality, column in p.images.items():
                cells = [(r, r[column]) for r in rows if r[column] is not None]
                if not cells:
                    continue
                where = f"subject {subject!r} column {column!r}"
                if isinstance(cells[0][1], (str, np.str_)):
                    if len(cells) != 1:
                        raise DafnetError(f"{where}: {len(cells)} NIfTI paths, expected one")
                    path_case.images[modality] = self._folder / str(cells[0][1])
                    label = cells[0][0].get(p.labels.get(modality)) if modality in p.labels else None
                    if label is not None:
                        path_case.labels[modality] = self._folder / str(label)
                    continue
                stack, label, z = self._stack(cells, modality, where)
                positions[(subject, modality)] = z
                stem = tmp / f"{len(positions):06d}"
                affine = _stack_affine(z, p.pixel_spacing_mm, stack.shape[1:])
                nib.save(volume_to_nifti(stack.astype(np.float32), affine), f"{stem}_image.nii")
                array_case.images[modality] = Path(f"{stem}_image.nii")
                names[f"{stem}_image.nii"] = f"{p.path} ({where})"
                if label is not None:
                    nib.save(volume_to_nifti(label.astype(np.int16), affine), f"{stem}_label.nii")
                    array_case.labels[modality] = Path(f"{stem}_label.nii")
                    names[f"{stem}_label.nii"] = f"{p.path} (subject {subject!r} column {p.labels[modality]!r})"
            arrays[subject], paths[subject] = array_case, path_case
        subjects: dict[str, Subject] = {}
        values = preprocessing_values(self.params)
        for cases, axis in ((arrays, _ARRAY_SLICE_AXIS), (paths, None)):
            cases = {s: c for s, c in cases.items() if c.images}
            if not cases:
                continue
            present = [m for m in self.modalities if any(m in c.images for c in cases.values())]
            with StagedNnUNet(cases, present, self.class_names, values, names) as staged:
                for subject in staged.load(slice_axis=axis, reorient=True if axis is not None else None):
                    subjects.setdefault(subject.id, Subject(subject.id, {})).volumes.update(subject.volumes)
                self._records.update(staged.records)
        for (subject, modality), z in positions.items():
            start, stop = self._records[(subject, modality)].slices
            subjects[subject].volumes[modality].slice_positions = z[start:stop].astype(np.float64)
        if not subjects:
            raise DafnetError(f"{p.path}: no row has an image in {list(p.images.values())}")
        return [subjects[s] for s in groups if s in subjects]

    def _stack(self, cells, modality: str, where: str):
        """(S, H, W) image, label or None, and slice positions (mm, increasing)."""
        p = self.params
        images = [np.asarray(c, dtype=np.float32) for _, c in cells]
        label_column = p.labels.get(modality)
        labels = [r[label_column] for r, _ in cells] if label_column else []
        if images[0].ndim == 3:
            if len(images) != 1:
                raise DafnetError(f"{where}: {len(images)} rows hold (S, H, W) stacks; one per subject")
            stack = images[0]
            label = None if not labels or labels[0] is None else np.asarray(labels[0])
            z = np.arange(stack.shape[0]) * p.slice_spacing_mm
        elif images[0].ndim == 2:
            if len({i.shape for i in images}) > 1:
                raise DafnetError(f"{where}: slices differ in shape {sorted({i.shape for i in images})}")
            if p.slice_position_column:
                z = np.array([float(_scalar(r[p.slice_position_column])) for r, _ in cells])
            else:
                z = np.arange(len(images)) * p.slice_spacing_mm
            order = np.argsort(z, kind="stable")
            stack, z = np.stack(images)[order], z[order]
            present = [lab is not None for lab in labels]
            if labels and any(present) and not all(present):
                raise DafnetError(f"{where}: {present.count(False)} of {len(present)} slices lack a label in "
                                  f"{label_column!r}", hint="label every slice of a volume, or none")
            label = np.stack([np.asarray(lab) for lab in labels])[order] if labels and all(present) else None
        else:
            raise DafnetError(f"{where}: cells must be (S, H, W) stacks, 2D slices or NIfTI paths; got "
                              f"shape {images[0].shape}")
        if label is not None and label.shape != stack.shape:
            raise DafnetError(f"{where}: label shape {label.shape} differs from image shape {stack.shape}")
        if len(z) > 1 and np.any(np.diff(z) <= 0):
            raise DafnetError(f"{where}: slice positions repeat", hint="one row per slice position")
        return stack, label, z


def _scalar(value):
    return value.item() if isinstance(value, np.ndarray) else value


def _stack_affine(z: np.ndarray, spacing: float, size) -> np.ndarray:
    """(slice, row, col) -> world: x = -col, y = -row (about the centre), z = the slice position."""
    h, w = size
    step = float(np.median(np.diff(z))) if len(z) > 1 else 1.0
    affine = np.zeros((4, 4))
    affine[0, 2], affine[0, 3] = -spacing, (w - 1) / 2.0 * spacing
    affine[1, 1], affine[1, 3] = -spacing, (h - 1) / 2.0 * spacing
    affine[2, 0], affine[2, 3] = step, float(z[0])
    affine[3, 3] = 1.0
    return affine
