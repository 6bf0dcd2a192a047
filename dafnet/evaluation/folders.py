"""Where ``dafnet evaluate`` writes: the output folder named from the call, the checks that keep
``--overwrite`` from deleting anything but one evaluation's folder, and the paths of files written
in the staging folder once it has replaced the output folder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from dafnet.errors import DafnetError

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]+")
_DROPPED = re.compile(r"[\s\[\](){}'\"]+")
_PART_CHARS = 48
"""Longest part of a folder name kept as it is; a longer one is cut and ends with a hash."""


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _name_part(text: str) -> str:
    """``text`` made safe for a folder name: kept when it is short and has only letters, digits
    and ``._=+,-``; otherwise its safe characters (spaces, brackets and quotes dropped, others as
    ``-``, cut to 40) and a hash of ``text``, so two texts never share a name."""
    safe = _UNSAFE.sub("-", _DROPPED.sub("", text)).strip("-.") or "x"
    if safe == text and len(text) <= _PART_CHARS:
        return text
    return f"{safe[:_PART_CHARS - 8].rstrip('-.')}-{_digest(text)}"


def evaluation_folder_name(metrics, split: str = "test", overrides=(), metric_options=(), data: str | None = None,
                           pairing: str | None = None) -> str:
    """The folder under ``<run>/evaluation/`` of one ``dafnet evaluate`` call, e.g.
    ``test__dice+alignment__model.fuser.name=mean``: the parts split, metrics (in the order given,
    joined by ``+``), then only when given: metric parameters, overrides (each joined by ``+``),
    ``data=<name>-<hash of its path>`` and ``pairing=<pairing>``, joined by ``__``. Each part is
    made filesystem-safe by :func:`_name_part` (long or unusual parts end with a hash)."""
    parts = [_name_part(split), "+".join(_name_part(m) for m in dict.fromkeys(metrics))]
    for items in (metric_options, overrides):
        if items:
            parts.append("+".join(_name_part(str(item).strip()) for item in items))
    if data is not None:
        path = Path(data).expanduser()
        path = path.resolve() if path.exists() else path
        label = _UNSAFE.sub("-", path.stem if path.suffix in (".yaml", ".yml") else path.name).strip("-.")
        parts.append(f"data={label[:24] or 'data'}-{_digest(str(path))}")
    if pairing is not None:
        parts.append(f"pairing={_name_part(pairing)}")
    name = "__".join(parts)
    return name if len(name) <= 160 else f"{name[:150].rstrip('-._+=')}-{_digest(name)}"


def check_target(out: Path, overwrite: bool, named: bool) -> None:
    """Refuse ``out`` when it holds anything, unless ``overwrite`` and it is an evaluation folder
    (has ``metrics.json`` and no evaluations in folders below it), so ``--overwrite`` never
    deletes a run or a folder of evaluations. ``named``: ``out`` is the default folder of the call."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        why = " (an earlier evaluation with the same split, metrics and overrides wrote it)" if named else ""
        raise DafnetError(f"the evaluation folder {out} exists and is not empty{why}",
                          hint="pass --overwrite to replace it, or --out FOLDER to write elsewhere")
    nested = [p for p in out.iterdir() if p.is_dir() and (p / "metrics.json").is_file()]
    if not (out / "metrics.json").is_file() or nested:
        what = f"holds other evaluations ({nested[0].name}, ...)" if nested else "has no metrics.json"
        raise DafnetError(f"{out} {what}: it is not one evaluation's folder, so --overwrite does not replace it",
                          hint="give --out a new folder or an earlier evaluation's folder")


def moved(file, staging: Path, out: Path) -> str:
    """A metric's file written under ``staging``, as its path once ``staging`` became ``out``."""
    try:
        return str(out / Path(file).relative_to(staging))
    except ValueError:
        return str(file)


__all__ = ["check_target", "evaluation_folder_name", "moved"]
