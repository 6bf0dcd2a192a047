"""The nnU-Net v2 raw layout, relaxed for DAFNet: dataset.json and the file listing.

Reading these never decodes an image. See docs/data.md for the layout.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from dafnet.data.nifti import NIFTI_ENDINGS, nifti_ending
from dafnet.errors import DafnetError

ROOT_KEY = "data.source.params.root"
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class DatasetJson:
    """What DAFNet uses of dataset.json."""

    path: Path
    channel_names: dict[int, str]
    """Channel index -> name, lower-cased, in index order."""
    class_names: tuple[str, ...]
    """Foreground class names ordered by label value 1..L."""
    file_ending: str | None
    """'.nii.gz' or '.nii'; None when dataset.json does not say (both accepted)."""
    num_training: int | None


def read_json_object(path: Path, missing: str, hint: str) -> dict:
    """A JSON file holding an object, or a DafnetError saying what is wrong with it."""
    if not path.is_file():
        raise DafnetError(missing, hint=hint)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DafnetError(f"{path} is not valid JSON: {exc}", hint=hint) from exc
    if not isinstance(raw, dict):
        raise DafnetError(f"{path} must hold a JSON object", hint=hint)
    return raw


def read_dataset_json(root: Path) -> DatasetJson:
    """Parse and check ``root/dataset.json``."""
    path = root / "dataset.json"
    hint = "write dataset.json with 'channel_names' and 'labels' (see docs/data.md)"
    raw = read_json_object(path, f"{path} does not exist; the nnU-Net dataset folder needs one", hint)
    missing = [k for k in ("channel_names", "labels") if k not in raw]
    if missing:
        raise DafnetError(f"{path} lacks the key(s) {missing}", hint=hint)
    channels = _channel_names(path, raw["channel_names"])
    classes = _class_names(path, raw["labels"])
    ending = raw.get("file_ending")
    if ending is not None and ending not in NIFTI_ENDINGS:
        raise DafnetError(f"{path}: file_ending {ending!r} is not supported; DAFNet reads NIfTI",
                          hint="convert the images to .nii.gz and set \"file_ending\": \".nii.gz\"")
    num = raw.get("numTraining")
    if num is not None and (not isinstance(num, int) or num < 0):
        raise DafnetError(f"{path}: numTraining must be a non-negative integer, got {num!r}")
    return DatasetJson(path, channels, classes, ending, num)


def _channel_names(path: Path, value) -> dict[int, str]:
    if not isinstance(value, dict) or not value:
        raise DafnetError(f"{path}: channel_names must be a non-empty mapping like "
                          '{"0": "FLAIR", "1": "T1"}')
    channels = {}
    for key, name in value.items():
        if not str(key).isdigit() or not isinstance(name, str) or not name.strip():
            raise DafnetError(f"{path}: channel_names entry {key!r}: {name!r} must map a channel "
                              "index (\"0\", \"1\", ...) to a name")
        channels[int(key)] = name.strip().lower()
    names = list(channels.values())
    if len(set(names)) != len(names):
        raise DafnetError(f"{path}: channel names repeat (case-insensitively): {names}",
                          hint="give every channel a distinct name")
    return dict(sorted(channels.items()))


def _class_names(path: Path, value) -> tuple[str, ...]:
    if not isinstance(value, dict) or not value:
        raise DafnetError(f"{path}: labels must be a mapping like "
                          '{"background": 0, "lesion": 1}')
    for name, label in value.items():
        if isinstance(label, (list, tuple)):
            raise DafnetError(f"{path}: label {name!r} is a region ({label}); region-based labels "
                              "are not supported", hint="give each class one integer value")
        if not isinstance(label, int) or isinstance(label, bool):
            raise DafnetError(f"{path}: label {name!r} must be an integer value, got {label!r}")
    values = sorted(value.values())
    if values != list(range(len(values))):
        raise DafnetError(f"{path}: label values must be 0..L without gaps or repeats (0 = "
                          f"background), got {values}",
                          hint="renumber the classes, or map file values with "
                               "data.source.params.label_map")
    by_value = {v: k for k, v in value.items()}
    return tuple(by_value[v] for v in range(1, len(values)))


@dataclass
class CaseFiles:
    """The files of one case (channel index -> path)."""

    images: dict[int, Path] = field(default_factory=dict)
    labels: dict[int, Path] = field(default_factory=dict)
    """Per-channel labels, labelsTr/<case>_<XXXX>."""
    shared_label: Path | None = None
    """nnU-Net's single label, labelsTr/<case>; valid for channels on its grid."""


def discover_cases(root: Path, info: DatasetJson) -> dict[str, CaseFiles]:
    """Case id -> its files, sorted by case id."""
    images_dir = root / "imagesTr"
    if not images_dir.is_dir():
        raise DafnetError(f"{images_dir} does not exist",
                          hint=f"put the images in imagesTr/ under {ROOT_KEY}")
    cases: dict[str, CaseFiles] = {}
    for path in _nifti_files(images_dir, info):
        match = _CHANNEL_FILE.match(_stem(path))
        if match is None:
            raise DafnetError(f"{path}: image names must be <case>_<XXXX>{info.file_ending or '.nii.gz'} "
                              "with XXXX the 4-digit channel index", hint="rename the file")
        channel = int(match["channel"])
        if channel not in info.channel_names:
            raise DafnetError(f"{path}: channel {channel:04d} is not in channel_names of {info.path} "
                              f"({_list_channels(info)})", hint="add it to channel_names or rename the file")
        cases.setdefault(match["case"], CaseFiles()).images[channel] = path
    labels_dir = root / "labelsTr"
    if labels_dir.is_dir():
        for path in _nifti_files(labels_dir, info):
            stem = _stem(path)
            match = _CHANNEL_FILE.match(stem)
            if match and match["case"] in cases and int(match["channel"]) in info.channel_names:
                cases[match["case"]].labels[int(match["channel"])] = path
            elif stem in cases:
                cases[stem].shared_label = path
            else:
                warnings.warn(f"{path} matches no case in imagesTr/ and is ignored", stacklevel=2)
    if info.num_training is not None and info.num_training != len(cases):
        warnings.warn(f"{info.path} says numTraining={info.num_training} but imagesTr/ holds "
                      f"{len(cases)} cases; using the files", stacklevel=2)
    return dict(sorted(cases.items()))


def _nifti_files(folder: Path, info: DatasetJson) -> list[Path]:
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        ending = nifti_ending(path)
        if ending is None:
            continue
        if info.file_ending is not None and ending != info.file_ending:
            raise DafnetError(f"{path} ends in {ending} but {info.path} says file_ending "
                              f"{info.file_ending!r}", hint="make the files and file_ending agree")
        files.append(path)
    return files


def _stem(path: Path) -> str:
    return path.name[: -len(nifti_ending(path))]


def _list_channels(info: DatasetJson) -> str:
    return ", ".join(f"{i:04d}={n}" for i, n in info.channel_names.items())
