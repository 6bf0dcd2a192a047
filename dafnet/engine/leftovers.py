"""What an interrupted or failed write leaves in a run folder, and what to say about it.

* Staging entries (``.state.tmp-<host>-<pid>-<token>``, ``.export.tmp-...``, ``.log.csv.tmp-...``)
  left by a run that was killed while saving are removed by the next ``dafnet train --resume``
  of that run (:func:`tidy_run_folder`); entries of a process that still runs are kept
  (:func:`dafnet.fsutil.stale_staging` says how that is told).
* A run folder without a state (killed before its first epoch ended) cannot be resumed, and one
  without an export cannot be evaluated or predicted with: each gets a message that says why and
  what to do (:func:`no_state_error`, :func:`no_export_error`).
* A write that fails during training (disk full, permission) ends the run with a
  :class:`WriteFailed` that names the path and how to go on (:func:`explain_write_failure`).
"""

from __future__ import annotations

from pathlib import Path

from dafnet.errors import DafnetError, WriteFailed
from dafnet.fsutil import remove_stale_staging, restore_interrupted_swap, write_failure

RUN_STAGED = ("state", "export", "recipe.yaml", "metadata.json", "splits.json", "log.csv", "summary.json",
              "failed.json")
"""The run folder's entries that are written through a staging entry beside them."""


def tidy_run_folder(root: Path) -> list[Path]:
    """Before a resume: put back a ``state/`` or ``export/`` whose swap was cut short, and remove the
    staging entries left by killed runs. Returns what was removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    for name in ("state", "export"):
        restore_interrupted_swap(root / name)
    return remove_stale_staging(root, RUN_STAGED)


def _is_run_folder(root: Path) -> bool:
    return root.is_dir() and (root / "recipe.yaml").is_file()


def no_state_error(root: Path) -> DafnetError:
    """Why ``root`` cannot be resumed: it has no ``state/``."""
    root = Path(root)
    if not root.exists():
        return DafnetError(f"cannot resume {root}: it does not exist",
                           hint="give the folder of a run that trained at least one epoch (its --run-dir)")
    if not _is_run_folder(root):
        return DafnetError(f"cannot resume {root}: it is not a dafnet run folder (no recipe.yaml and no state/)",
                           hint="give the folder of a run that trained at least one epoch (its --run-dir)")
    return DafnetError(f"cannot resume {root}: it holds no saved state, so it stopped (was it killed?) before "
                       "its first epoch ended and there is nothing to continue",
                       hint=f"start it again without --resume: dafnet train {root / 'recipe.yaml'} --run-dir "
                            f"NEW_FOLDER, or remove the folder (rm -r {root}) and run the same train command")


def no_export_error(root: Path) -> DafnetError | None:
    """Why the run folder ``root`` has no export (it failed, is unfinished, or never saved a state);
    None when ``root`` is not a run folder."""
    root = Path(root)
    if not _is_run_folder(root):
        return None
    if (root / "failed.json").is_file():
        return DafnetError(f"run {root} has no export: a training health check stopped it "
                           f"({root / 'failed.json'} says which)",
                           hint=f"read failed.json and log.csv; to go on anyway: dafnet train --resume {root} "
                                "train.health.enabled=false")
    if (root / "state").is_dir():
        return DafnetError(f"run {root} has no export yet: it is still training, or it stopped before the end",
                           hint=f"if it is not running, finish it with: dafnet train --resume {root}")
    return DafnetError(f"run {root} has no export and no saved state: it stopped (was it killed?) before its "
                       "first epoch ended",
                       hint=f"train it again: remove the folder (rm -r {root}) and run the same train command, "
                            f"or dafnet train {root / 'recipe.yaml'} --run-dir NEW_FOLDER")


def explain_write_failure(exc: BaseException, root: Path) -> WriteFailed | None:
    """``exc`` (a failed write during ``train``) as a :class:`WriteFailed` that names the path and
    says how to go on from what the run folder holds now; None when ``exc`` is something else (an
    :class:`OSError` counts only when it names a path in the run folder)."""
    root = Path(root)
    if isinstance(exc, WriteFailed):
        path, message = Path(exc.path), exc.message
    elif isinstance(exc, DafnetError):
        return None
    else:
        reason = write_failure(exc)
        filename = getattr(exc, "filename", None)
        if reason is None or not filename or root.resolve() not in Path(filename).resolve().parents:
            return None
        path, message = Path(filename), f"cannot write {filename}: {reason}"
    if (root / "state").is_dir():
        hint = (f"free space (or fix the permission) where the run is written, then continue it with: dafnet train "
                f"--resume {root} (from its last saved epoch; when every epoch is done, it only exports)")
    elif root.exists():
        hint = f"the run saved no epoch: free space, remove {root} and run the same train command again"
    else:
        hint = "the run saved no epoch, so nothing was kept: free space and run the same train command again"
    return WriteFailed(message, hint=hint, path=path)
