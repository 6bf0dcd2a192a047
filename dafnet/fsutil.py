"""Writing atomically: build beside the target in a hidden staging entry, then swap it into place.

Staging entries are named ``.<target>.tmp-<host>-<pid>-<token>`` (``.old-`` for the previous
folder during the swap), so a later run can tell the ones left by a process that was killed
(:func:`remove_stale_staging`) from the ones a running process is still writing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

STALE_AFTER_S = 24 * 3600
"""A staging entry whose creator cannot be checked (written on another host, or by a dafnet that
did not name its process) is stale once it has not changed for this long."""

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-"
                      r"(?:(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})|[0-9a-f]{8,12})$")
"""New names carry host and pid; older dafnets wrote ``.<target>.tmp-<8 hex>`` / ``.old-<12 hex>``."""


def staging_path(target: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of ``target`` to build it in: ``.<name>.<kind>-<host>-<pid>-<token>``."""
    target = Path(target)
    return target.parent / f".{target.name}.{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this host. The calling process counts as gone: it cleans
    a folder only before it stages anything there, so an entry with its pid was left by an earlier
    process that had the same pid (a restarted container, say)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it runs, as another user
        return False
    return False


def _is_stale(match: re.Match, entry: Path) -> bool:
    if match["pid"] is not None and match["host"] == _HOST:
        return _process_gone(int(match["pid"]))
    try:
        age = time.time() - entry.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S


def stale_staging(folder: Path, names: Iterable[str]) -> list[Path]:
    """The staging entries in ``folder`` for the targets ``names`` whose writer is gone: made on
    this host by a process that no longer runs, or (another host, an older dafnet's name) unchanged
    for :data:`STALE_AFTER_S`. A ``.old-`` folder whose target is missing is the only copy left by
    a swap cut short (:func:`restore_interrupted_swap`), and is not listed."""
    folder, names = Path(folder), set(names)
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        match = _STAGING.match(entry.name)
        if match is None or match["name"] not in names:
            continue
        if match["kind"] == "old" and not (folder / match["name"]).exists():
            continue
        if _is_stale(match, entry):
            found.append(entry)
    return found


def remove_stale_staging(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove :func:`stale_staging` entries (left by a killed run); returns what was removed."""
    removed = []
    for entry in stale_staging(folder, names):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except OSError:
                continue
        if not entry.exists():
            removed.append(entry)
    return removed


def restore_interrupted_swap(target: Path) -> bool:
    """Put back the previous ``target`` folder when a process was killed between the two renames of
    :func:`replace_directory` (``target`` missing, its ``.old-`` copy there)."""
    target = Path(target)
    if target.exists() or not target.parent.is_dir():
        return False
    olds = [e for e in target.parent.iterdir()
            if (m := _STAGING.match(e.name)) and m["kind"] == "old" and m["name"] == target.name and e.is_dir()]
    if not olds:
        return False
    os.replace(max(olds, key=lambda e: e.stat().st_mtime), target)
    return True


def write_failure(exc: BaseException) -> str | None:
    """Why a write failed when ``exc`` is a failed write (disk full, no permission, read-only file
    system ...), else None: an :class:`OSError`, or the errors safetensors and torch raise for one."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if not isinstance(exc, RuntimeError) and type(exc).__name__ != "SafetensorError":
        return None
    text = str(exc)
    said = re.search(r'message: "([^"]+)"', text)  # safetensors: IoError(Os { code: 28, ... message: "..." })
    if said:
        return said.group(1)
    for known in ("No space left on device", "Disk quota exceeded", "Permission denied", "Read-only file system"):
        if known in text:
            return known
    if "IoError" in text or "file write failed" in text:
        return text.strip().splitlines()[0][:200]
    return None


def write_atomically(path: Path, write) -> Path:
    """``write(tmp)`` to a staging file beside ``path``, then rename it into place; a failed write
    (disk full, permission) removes the staging file and is a :class:`WriteFailed` naming ``path``."""
    path = Path(path)
    tmp = staging_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:  # noqa: BLE001 (raise_write_failed re-raises it)
        try:
            tmp.unlink()
        except OSError:
            pass
        raise_write_failed(exc, f"write {path}", path)
    return path


def raise_write_failed(exc: BaseException, action: str, path: Path) -> NoReturn:
    """Re-raise ``exc`` (from inside its ``except``) as :class:`WriteFailed` ("cannot ACTION: why",
    naming ``path`` and a hint) when it is a failed write (:func:`write_failure`), else unchanged."""
    from dafnet.errors import WriteFailed

    reason = write_failure(exc)
    if reason is None:
        raise exc
    raise WriteFailed(f"cannot {action}: {reason}", path=path,
                      hint=f"free space (or fix the permission) in {path.parent}") from exc


def replace_directory(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``, replacing an existing ``target`` only at
    the last moment (and putting it back if the rename fails), so no half-written folder is left."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = staging_path(target, "old")
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
