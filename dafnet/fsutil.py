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
