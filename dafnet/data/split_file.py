"""A user's split file in nnU-Net's ``splits_final.json`` format (docs/data.md "Splits").

The file is a JSON list of folds, each ``{"train": [ids], "val": [ids]}``. A fold's ``val`` is
its held-out set, our test set; validation is carved from its ``train``
(:func:`dafnet.data.splits.split_subjects`).
"""

from __future__ import annotations

import json
from pathlib import Path

from dafnet.config.schema import SplitConfig
from dafnet.errors import DafnetError

KEY = "data.split.file"
_FORMAT = 'a JSON list of folds, each {"train": [subject ids], "val": [subject ids]}'


def read_split_file(path: str | Path) -> list[dict[str, list[str]]]:
    """The folds of an nnU-Net ``splits_final.json``, checked for shape: a list of
    ``{"train", "val"}`` id lists with no id repeated within a fold."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DafnetError(f"split file {path} ({KEY}) is a folder, not a file",
                          hint="give the path of the splits_final.json itself")
    if not path.is_file():
        raise DafnetError(f"split file {path} ({KEY}) does not exist",
                          hint="give the path relative to the recipe file, or an absolute one")
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DafnetError(f"split file {path} ({KEY}) is not JSON: {exc}", hint=f"write {_FORMAT}") from exc
    if not isinstance(folds, list) or not folds:
        raise DafnetError(f"split file {path} ({KEY}) must hold a non-empty list of folds, got "
                          f"{type(folds).__name__ if folds else 'an empty one'}", hint=f"write {_FORMAT}")
    out = []
    for index, fold in enumerate(folds):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            shown = sorted(fold) if isinstance(fold, dict) else type(fold).__name__
            raise DafnetError(f"split file {path}: fold {index} must be a mapping with exactly the keys "
                              f"train and val, got {shown}", hint=f"write {_FORMAT}")
        parts = {}
        for part in ("train", "val"):
            ids = fold[part]
            if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
                raise DafnetError(f"split file {path}: fold {index}'s {part} must be a list of subject ids",
                                  hint=f"write {_FORMAT}")
            ids = [str(i) for i in ids]
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                raise DafnetError(f"split file {path}: fold {index}'s {part} lists {repeated[:5]} twice")
            parts[part] = ids
        both = sorted(set(parts["train"]) & set(parts["val"]))
        if both:
            raise DafnetError(f"split file {path}: fold {index} has subjects in both train and val: {both[:5]}",
                              hint="a subject is either trained on or held out in a fold")
        if not parts["val"]:
            raise DafnetError(f"split file {path}: fold {index}'s val (the test set) is empty")
        out.append(parts)
    return out


def fold_from_file(path: str | Path, config: SplitConfig, ids: list) -> tuple[list, list]:
    """(train pool, test) of ``config.fold`` in the split file, each in the order of ``ids``.

    Every id the fold names must be a subject of the data, and every subject must be in the fold.
    """
    folds = read_split_file(path)
    if config.fold >= len(folds):
        raise DafnetError(f"data.split.fold is {config.fold}, but split file {path} has {len(folds)} "
                          f"folds (0..{len(folds) - 1})", hint="choose a fold the file has")
    if config.folds != len(folds):
        raise DafnetError(f"data.split.folds is {config.folds}, but split file {path} has {len(folds)} folds",
                          hint=f"set data.split.folds: {len(folds)}")
    fold = folds[config.fold]
    known = {str(i) for i in ids}
    named = set(fold["train"]) | set(fold["val"])
    unknown = sorted(named - known)
    if unknown:
        raise DafnetError(f"split file {path}: fold {config.fold} names subjects the data do not have: "
                          f"{unknown[:5]}" + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""),
                          hint="use the data's subject ids (nnU-Net case ids, or the datalist's id)")
    missing = sorted(known - named)
    if missing:
        raise DafnetError(f"split file {path}: fold {config.fold} places neither in train nor in val the "
                          f"subjects {missing[:5]}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
                          hint="list every subject of the data in each fold")
    test = set(fold["val"])
    return [i for i in ids if str(i) not in test], [i for i in ids if str(i) in test]


__all__ = ["fold_from_file", "read_split_file"]
