"""Writing folders atomically: build beside the target, then swap it into place."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def replace_directory(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``, replacing an existing ``target`` only at
    the last moment (and putting it back if the rename fails), so no half-written folder is left."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def missing_parents(path: str | Path, what: str) -> list[Path]:
    """The folders above ``path`` that do not exist yet, outermost first; a :class:`DafnetError`
    naming ``what`` (e.g. ``--out``) when the nearest existing one is a file or not writable."""
    from dafnet.errors import DafnetError

    path = Path(path)
    missing, parent = [], path.parent
    while not parent.exists() and parent != parent.parent and not parent.is_symlink():
        missing.append(parent)
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise DafnetError(f"{what} {path} cannot be created: {parent} is a file, not a folder",
                          hint="give a path under a folder")
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise DafnetError(f"{what} {path} cannot be written: {parent} is not writable",
                          hint="give a path in a folder you can write to")
    return missing[::-1]


def check_output_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder dafnet may create or write into: a :class:`DafnetError` naming ``what``
    (e.g. ``--out``) when it is a file, lies under a file, or its nearest existing folder is not
    writable. Creates nothing."""
    from dafnet.errors import DafnetError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DafnetError(f"{what} {path} exists and is not a folder", hint="give a folder path")
    if not path.exists():
        missing_parents(path, what)
    elif not os.access(path, os.W_OK | os.X_OK):
        raise DafnetError(f"{what} {path} cannot be written: it is not writable",
                          hint="give a path in a folder you can write to")
    return path
