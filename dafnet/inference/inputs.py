"""What ``dafnet predict --input`` names: an nnU-Net raw folder, one of its image folders, or a case.

Accepted forms (see docs/data.md):

* ``DATASET``: a folder with ``dataset.json`` and ``imagesTs/`` (used when it holds NIfTI files)
  or else ``imagesTr/``; every case in it;
* ``DATASET/imagesTr`` or ``DATASET/imagesTs``: that folder (``dataset.json`` in its parent);
* ``DATASET/<case>`` or ``DATASET/imagesTs/<case>`` (a path that does not exist: the case
  prefix), or one file ``.../<case>_<XXXX>.nii.gz`` of the case: that case only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dafnet.data.nifti import nifti_ending
from dafnet.data.nnunet_layout import DatasetJson, read_dataset_json
from dafnet.errors import DafnetError

CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
IMAGE_FOLDERS = ("imagesTs", "imagesTr")
LABEL_FOLDERS = ("labelsTr", "labelsTs")


@dataclass(frozen=True)
class InputCases:
    """The cases of an input: case -> channel index -> image file."""

    root: Path
    images_dir: Path
    info: DatasetJson
    cases: dict[str, dict[int, Path]]

    def folders(self) -> list[Path]:
        """The folders of the input's files that predict must not write into: its image folder and
        the dataset's image and label folders."""
        return [self.images_dir, *(self.root / n for n in (*IMAGE_FOLDERS, *LABEL_FOLDERS))]


def find_input(path: str | Path) -> InputCases:
    """Resolve ``--input`` (see the module docstring); errors name what is missing."""
    path = Path(path).expanduser()
    case = None
    if path.is_file():
        ending = nifti_ending(path)
        match = CHANNEL_FILE.match(path.name[: -len(ending)]) if ending else None
        if match is None:
            raise DafnetError(f"input {path} is not an image <case>_<XXXX>.nii.gz of an nnU-Net folder",
                              hint="give the dataset folder, its imagesTs/ or imagesTr/, or a case in it")
        path, case = path.parent, match["case"]
    elif not path.exists():
        if path.name in ("", ".") or not _is_layout(path.parent):
            raise DafnetError(f"input {path} does not exist",
                              hint="give an nnU-Net raw folder (dataset.json + imagesTs/ or imagesTr/), "
                                   "one of its image folders, or DATASET/<case>")
        path, case = path.parent, path.name
    root, images_dir = _layout(path)
    info = read_dataset_json(root)
    cases = _list_cases(images_dir, info)
    if case is not None:
        if case not in cases:
            raise DafnetError(f"input not found: no image {case}_XXXX in {images_dir}",
                              hint=f"cases there: {', '.join(list(cases)[:8]) or '(none)'}")
        cases = {case: cases[case]}
    if not cases:
        raise DafnetError(f"input {images_dir} holds no NIfTI images <case>_<XXXX>.nii.gz",
                          hint="check the folder")
    return InputCases(root, images_dir, info, cases)


def _is_layout(path: Path) -> bool:
    """Whether ``path`` is an nnU-Net raw folder or one of its image folders (a case prefix's parent)."""
    return (path / "dataset.json").is_file() or (
        path.name in IMAGE_FOLDERS and (path.parent / "dataset.json").is_file())


def _layout(path: Path) -> tuple[Path, Path]:
    if (path / "dataset.json").is_file():
        for name in IMAGE_FOLDERS:
            folder = path / name
            if folder.is_dir() and any(nifti_ending(p) for p in folder.iterdir()):
                return path, folder
        raise DafnetError(f"input {path} has no imagesTs/ or imagesTr/ with NIfTI images",
                          hint="put the images in imagesTs/<case>_<XXXX>.nii.gz")
    if path.name in IMAGE_FOLDERS and (path.parent / "dataset.json").is_file():
        return path.parent, path
    raise DafnetError(f"input {path} is not an nnU-Net raw folder: no dataset.json in it"
                      + (" or its parent" if path.name in IMAGE_FOLDERS else ""),
                      hint="the folder needs dataset.json (channel_names, labels) and imagesTs/ or imagesTr/")


def _list_cases(folder: Path, info: DatasetJson) -> dict[str, dict[int, Path]]:
    cases: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        ending = nifti_ending(path)
        if ending is None or path.name.startswith(".") or path.is_dir():
            continue
        match = CHANNEL_FILE.match(path.name[: -len(ending)])
        if match is None:
            raise DafnetError(f"{path}: image names must be <case>_<XXXX>{ending}", hint="rename the file")
        channel = int(match["channel"])
        if channel not in info.channel_names:
            raise DafnetError(f"{path}: channel {channel:04d} is not in channel_names of {info.path}",
                              hint="add it to channel_names or remove the file")
        cases.setdefault(match["case"], {})[channel] = path
    return cases


def resolve_channels(channel_names: dict[int, str], selection, modalities) -> dict[str, int]:
    """Modality -> channel index of a dataset, for the ``modalities`` that it has.

    ``selection`` is the nnunet source's ``channels`` param the model was trained with: a
    ``{modality: channel name or index}`` mapping renames; otherwise a modality is the channel
    of that (case-insensitive) name.
    """
    by_name = {n.lower(): i for i, n in channel_names.items()}
    renames = selection if isinstance(selection, dict) else {}
    found = {}
    for modality in modalities:
        ref = str(renames.get(modality, modality)).strip().lower()
        index = by_name.get(ref, int(ref) if ref.isdigit() else None)
        if index in channel_names:
            found[modality] = index
    return found
