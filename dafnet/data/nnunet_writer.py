"""Write subjects in the nnU-Net v2 raw layout, relaxed for unaligned modalities.

Layout of ``out_dir``::

    dataset.json
    imagesTr/<case>_<XXXX>.nii.gz   one file per channel (modality), in its own geometry
    labelsTr/<case>_<XXXX>.nii.gz   one label file per channel (nnU-Net proper has one per case)

Arrays are stored in NIfTI voxel order (col, row, slice), i.e. a dafnet ``Volume`` array
(slice, row, col) transposed, and the NIfTI affine is the volume's affine with its
columns permuted accordingly, so world coordinates are unchanged. SimpleITK (nnU-Net's
reader) hands the arrays back as (slice, row, col).
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from dafnet.errors import DafnetError
from dafnet.fsutil import missing_parents, replace_directory
from dafnet.interfaces import Subject

FILE_ENDING = ".nii.gz"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VOLUME_FROM_NIFTI = np.array(  # (slice, row, col, 1) = P @ (i=col, j=row, k=slice, 1)
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def volume_to_nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A NIfTI image of an (S, H, W) array with a dafnet (slice, row, col) affine."""
    image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)),
                            np.asarray(affine, dtype=np.float64) @ _VOLUME_FROM_NIFTI)
    image.header.set_xyzt_units("mm")
    return image


def nifti_to_volume(image: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`volume_to_nifti`: the (S, H, W) array and its (slice, row, col) affine."""
    array = np.asanyarray(image.dataobj).transpose(2, 1, 0)
    return array, image.affine @ np.linalg.inv(_VOLUME_FROM_NIFTI)


def write_nnunet_raw(subjects: Sequence[Subject], out_dir: str | Path,
                     modalities: Sequence[str], class_names: Sequence[str],
                     dataset_name: str = "dafnet", overwrite: bool = False,
                     metadata: Mapping | None = None,
                     overwrite_option: str = "overwrite=True") -> Path:
    """Write ``subjects`` under ``out_dir`` atomically; returns ``out_dir``.

    Channel ``i`` is ``modalities[i]``. A subject without some modality (or without its
    label) simply has no file for that channel; dataset.json lists what is missing.
    Everything is first written to a temporary sibling folder and renamed into place,
    so an error leaves nothing half-written. A non-empty ``out_dir`` is replaced only
    with ``overwrite=True``, and only when it looks like a dataset this writer wrote
    (dataset.json with a "dafnet" section, imagesTr/ and labelsTr/ of NIfTI files, nothing
    else); any other folder is left alone. ``overwrite_option`` is how messages name the
    overwrite switch (the CLI passes ``--overwrite``). A path that cannot be written
    (a parent is a file, no permission, ...) is a :class:`DafnetError`.
    """
    out_dir = Path(out_dir)
    _check_inputs(subjects, modalities, class_names)
    check_output(out_dir, overwrite, overwrite_option)
    created = _make_parents(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    hint = "choose a folder you can write to"
    try:
        try:
            tmp.mkdir()
        except OSError as exc:
            raise DafnetError(f"cannot write {out_dir}: cannot create a folder in {out_dir.parent} "
                              f"({_reason(exc)})", hint=hint) from exc
        try:
            _write_tree(tmp, subjects, list(modalities), list(class_names), dataset_name,
                        dict(metadata or {}))
            replace_directory(tmp, out_dir)
        except OSError as exc:
            raise DafnetError(f"cannot write {out_dir}: {_reason(exc)}; nothing was written",
                              hint="check the free disk space and the folder's permissions") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created):  # only the (empty) parents made above
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return out_dir


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def check_output(out_dir: str | Path, overwrite: bool = False,
                 overwrite_option: str = "overwrite=True") -> None:
    """The checks :func:`write_nnunet_raw` makes of ``out_dir`` before writing (creates
    nothing), for callers that want to fail before generating the subjects."""
    out_dir = Path(out_dir)
    try:
        _check_target(out_dir, overwrite, overwrite_option)
        missing_parents(out_dir, "output folder")
    except OSError as exc:  # e.g. a parent that cannot be searched
        where = f" ({exc.filename})" if exc.filename else ""
        raise DafnetError(f"cannot write {out_dir}: {_reason(exc)}{where}",
                          hint="choose a folder you can write to") from exc


def _make_parents(out_dir: Path) -> list[Path]:
    """Create the missing parents of ``out_dir`` (outermost first, returned) or say why not."""
    hint = "choose a folder you can write to"
    created = []
    for folder in missing_parents(out_dir, "output folder"):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise DafnetError(f"cannot write {out_dir}: {folder} is not a folder", hint=hint) from None
        except OSError as exc:
            for made in reversed(created):
                made.rmdir()
            raise DafnetError(f"cannot write {out_dir}: cannot create the folder {folder} "
                              f"({_reason(exc)})", hint=hint) from exc
        else:
            created.append(folder)
    return created


def _check_inputs(subjects, modalities, class_names) -> None:
    if not subjects:
        raise DafnetError("no subjects to write", hint="the data source returned no subjects")
    if not modalities or len(set(modalities)) != len(modalities):
        raise DafnetError(f"modalities must be non-empty and distinct, got {list(modalities)}")
    if not class_names:
        raise DafnetError("class_names is empty", hint="name the foreground classes 1..L")
    ids = [s.id for s in subjects]
    bad = [i for i in ids if not _SAFE_ID.match(i)]
    if bad:
        raise DafnetError(f"subject ids not usable as file names: {bad[:5]}",
                          hint="use letters, digits, '.', '_' and '-'")
    if len(set(ids)) != len(ids):
        raise DafnetError("subject ids repeat", hint="every subject needs its own id")
    for subject in subjects:
        if not any(m in subject.volumes for m in modalities):
            raise DafnetError(f"subject {subject.id!r} has none of the modalities {list(modalities)}")
        for name, volume in subject.volumes.items():
            if volume.label is not None and volume.label.size and (
                    volume.label.min() < 0 or volume.label.max() > len(class_names)):
                raise DafnetError(
                    f"subject {subject.id!r} {name}: label values outside 0..{len(class_names)}")


def _check_target(out_dir: Path, overwrite: bool, option: str = "overwrite=True") -> None:
    if not out_dir.exists():
        if out_dir.is_symlink():
            raise DafnetError(f"{out_dir} is a link to nothing", hint="remove it or choose another path")
        return
    if not out_dir.is_dir():
        raise DafnetError(f"{out_dir} exists and is not a folder", hint="choose another path")
    try:
        entries = sorted(p.name for p in out_dir.iterdir())
    except OSError as exc:
        raise DafnetError(f"cannot read the folder {out_dir} ({_reason(exc)})",
                          hint="choose a folder you can write to") from exc
    if not entries:
        return
    if not overwrite:
        raise DafnetError(f"{out_dir} exists and is not empty",
                          hint=f"choose another folder, or pass {option} to replace it")
    problem = _not_a_written_dataset(out_dir, entries)
    if problem:
        raise DafnetError(f"{out_dir} is not empty and does not look like a dataset written by "
                          f"dafnet ({problem}); {option} only replaces those",
                          hint="choose another folder, or remove or empty this one yourself")


_WRITTEN = ("dataset.json", "imagesTr", "labelsTr")


def _not_a_written_dataset(out_dir: Path, entries: list[str]) -> str | None:
    """Why ``out_dir`` is not a dataset :func:`write_nnunet_raw` wrote (None when it is one)."""
    unexpected = [name for name in entries if name not in _WRITTEN]
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        return f"it holds {shown}"
    dataset = out_dir / "dataset.json"
    if not dataset.is_file():
        return "it has no dataset.json"
    try:
        raw = json.loads(dataset.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "its dataset.json is not valid JSON"
    if not isinstance(raw, dict) or not isinstance(raw.get("dafnet"), dict):
        return "its dataset.json has no \"dafnet\" section"
    for name in _WRITTEN[1:]:
        folder = out_dir / name
        if not folder.exists():
            continue
        if folder.is_symlink() or not folder.is_dir():
            return f"{name} is not a folder"
        others = [p.name for p in folder.iterdir()
                  if p.is_symlink() or not p.is_file() or not p.name.endswith(FILE_ENDING)]
        if others:
            return f"{name}/ holds {', '.join(sorted(others)[:5])}"
    return None


def _write_tree(root: Path, subjects, modalities, class_names, dataset_name, metadata) -> None:
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    label_dtype = np.uint8 if len(class_names) < 256 else np.int16
    missing: dict[str, list[str]] = {}
    unlabelled: dict[str, list[str]] = {}
    positions: dict[str, dict[str, list[float]]] = {}
    for subject in subjects:
        positions[subject.id] = {}
        for channel, name in enumerate(modalities):
            volume = subject.volumes.get(name)
            if volume is None:
                missing.setdefault(subject.id, []).append(name)
                continue
            stem = f"{subject.id}_{channel:04d}{FILE_ENDING}"
            nib.save(volume_to_nifti(volume.image.astype(np.float32), volume.affine),
                     root / "imagesTr" / stem)
            if volume.label is None:
                unlabelled.setdefault(subject.id, []).append(name)
            else:
                nib.save(volume_to_nifti(volume.label.astype(label_dtype), volume.affine),
                         root / "labelsTr" / stem)
            positions[subject.id][name] = [float(p) for p in volume.slice_positions]
    dataset = {
        "name": dataset_name,
        "channel_names": {str(i): name for i, name in enumerate(modalities)},
        "labels": {"background": 0, **{name: i + 1 for i, name in enumerate(class_names)}},
        "numTraining": len(subjects),
        "file_ending": FILE_ENDING,
        "dafnet": {
            "layout": "nnU-Net v2 raw with per-channel labels: modalities are not aligned",
            "per_channel_labels": True,
            "label_files": "labelsTr/<case>_<XXXX>.nii.gz, channel XXXX in its own geometry",
            "array_axes": "NIfTI voxel (i, j, k) = (col, row, slice) of dafnet's (slice, row, col)",
            "source": metadata.pop("source", "unknown"),
            "missing_channels": missing,
            "unlabelled_channels": unlabelled,
            "slice_positions_mm": positions,
            **metadata,
        },
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
