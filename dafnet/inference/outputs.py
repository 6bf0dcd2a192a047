"""Writing predictions: NIfTI masks on the input file's grid, overlay PNGs and (nnU-Net's
``--save_probabilities``) class probabilities with their geometry, each written to a
temporary file and renamed into place (readers never see half a file). A run writes into a staging
folder (:func:`staged_output`) that reaches ``--out`` only when every case succeeded.

The staging folder is ``--out/.dafnet-predict.tmp-<host>-<pid>-<token>`` (or, while ``--out`` does
not exist, ``.<out>.tmp-<host>-<pid>-<token>`` beside it). A run that fails removes it; one that was
killed leaves it, and the next ``dafnet predict`` to the same ``--out`` removes it once the process
that made it no longer runs (:func:`dafnet.fsutil.stale_staging`), so runs into one ``--out`` at the
same time keep theirs."""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dafnet.errors import DafnetError, WriteFailed
from dafnet.fsutil import STALE_AFTER_S, remove_stale_staging, staging_path, write_failure

STAGING_NAME = "dafnet-predict"
"""The staging folder inside an existing ``--out`` is a staging entry of this (never written) name."""
_OLD_STAGING = re.compile(r"^\.dafnet-predict-[0-9a-f]{8}$")
"""An older dafnet's staging folder name (no process in it): removed once a day old."""


def output_names(case: str, probabilities: bool = False) -> tuple[str, ...]:
    """The files predict writes for ``case``: its mask and its overlay, and with ``probabilities``
    the probabilities and their geometry."""
    names = (f"{case}.nii.gz", f"{case}_overlay.png")
    return names + ((f"{case}.npz", f"{case}.json") if probabilities else ())


def check_output_dir(out_dir: str | Path, root: Path, folders: Iterable[Path]) -> Path:
    """``--out`` checked before anything runs: not a file, not the input dataset folder ``root``
    and not inside one of its image/label ``folders`` (a mask there would break the dataset)."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise DafnetError(f"output {out_dir} exists and is not a folder", hint="choose a folder for --out")
    where = out_dir.resolve()
    hint = f"choose a folder outside the dataset's image and label folders, e.g. {root / 'predictions'}"
    if where == root.resolve():
        raise DafnetError(f"--out {out_dir} is the input dataset folder {root}", hint=hint)
    for folder in folders:
        if where == folder.resolve() or folder.resolve() in where.parents:
            raise DafnetError(f"--out {out_dir} is {'' if where == folder.resolve() else 'inside '}the "
                              f"input's folder {folder}: the masks would be mixed with the dataset's own "
                              "files and break it", hint=hint)
    return out_dir


def existing_outputs(out_dir: Path, names: Iterable[str], overwrite: bool) -> list[str]:
    """The ``names`` that ``out_dir`` already holds; an error unless ``overwrite`` (or when one is a folder)."""
    existing = [n for n in names if (out_dir / n).exists() or (out_dir / n).is_symlink()]
    folders = [n for n in existing if (out_dir / n).is_dir()]
    if folders:
        raise DafnetError(f"{out_dir / folders[0]} is a folder where predict writes a file",
                          hint="move it away or choose another --out")
    if existing and not overwrite:
        shown = ", ".join(existing[:4]) + (", ..." if len(existing) > 4 else "")
        raise DafnetError(f"--out {out_dir} already holds {len(existing)} file(s) this run would write: {shown}",
                          hint="pass --overwrite to replace them (other files there are kept), "
                               "or choose another --out")
    return existing


@contextmanager
def staged_output(out_dir: Path) -> Iterator[Path]:
    """A hidden temporary folder to write every file of a run into: when the block ends without an
    error it becomes ``out_dir`` (renamed into place) or, when ``out_dir`` exists, its files are moved
    into it, replacing those of the same name; on any error it is removed and ``out_dir`` (and its
    missing parents) are left as they were. A write that fails (disk full) is a :class:`WriteFailed`
    naming ``out_dir``. Staging folders that killed runs left there are removed first."""
    remove_stale_staging_output(out_dir)
    tmp = staging_path(out_dir / STAGING_NAME) if out_dir.is_dir() else staging_path(out_dir)
    created = [p for p in (tmp.parent, *tmp.parent.parents) if not p.exists()]
    try:
        for folder in reversed(created):
            folder.mkdir()
        tmp.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise DafnetError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}",
                          hint="choose a writable folder for --out") from exc
    try:
        try:
            yield tmp
        except BaseException as exc:
            reason = _write_failure(exc)
            if reason is None:
                raise
            raise WriteFailed(f"cannot write the predictions to {out_dir}: {reason}", path=out_dir,
                              hint=f"nothing was written to {out_dir}: free space (or fix the permission) there "
                                   "and run the same dafnet predict again") from exc
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def _write_failure(exc: BaseException) -> str | None:
    """Why a write into the staging folder failed (None: ``exc`` is no failed write)."""
    if isinstance(exc, WriteFailed):
        return (write_failure(exc.__cause__) if exc.__cause__ is not None else None) or exc.message
    return None if isinstance(exc, DafnetError) else write_failure(exc)


def remove_stale_staging_output(out_dir: Path) -> list[Path]:
    """Remove the staging folders of ``out_dir`` left by killed ``dafnet predict`` runs."""
    out_dir = Path(out_dir)
    removed = remove_stale_staging(out_dir, [STAGING_NAME]) + remove_stale_staging(out_dir.parent, [out_dir.name])
    if out_dir.is_dir():
        for entry in out_dir.iterdir():
            if (_OLD_STAGING.match(entry.name) and entry.is_dir()
                    and time.time() - entry.stat().st_mtime > STALE_AFTER_S):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _publish(tmp: Path, out_dir: Path) -> None:
    try:
        if not out_dir.exists():
            os.rename(tmp, out_dir)
            return
        for path in sorted(tmp.iterdir()):
            os.replace(path, out_dir / path.name)
        tmp.rmdir()
    except OSError as exc:
        raise WriteFailed(f"cannot move the predictions into {out_dir}: {exc.strerror or exc}", path=out_dir,
                          hint="check the output folder") from exc


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            pass


def _atomic(path: Path, write) -> Path:
    tmp = path.with_name(f".{uuid.uuid4().hex[:8]}.tmp-{path.name}")  # keeps the file ending
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(f"cannot write {path}: {exc.strerror or exc}", path=path,
                          hint="check the output folder") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_mask(path: Path, mask: np.ndarray, reference: str | Path) -> Path:
    """Save a uint8 ``mask`` with the header and affine of the image file ``reference``
    (its spatial shape: 2D files stay 2D, a 4D file's mask is 3D)."""
    import nibabel as nib

    image = nib.load(str(reference))
    shape = tuple(image.shape[:3]) if len(image.shape) >= 3 else tuple(image.shape)
    mask = np.asarray(mask, dtype=np.uint8).reshape(shape)
    header = image.header.copy()
    out = type(image)(mask, image.affine, header)
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["cal_min"], out.header["cal_max"] = 0, int(mask.max()) if mask.size else 0
    return _atomic(path, lambda tmp: nib.save(out, str(tmp)))


def write_probabilities(npz_path: Path, json_path: Path, probabilities: np.ndarray, reference: str | Path,
                        info: dict) -> tuple[Path, Path]:
    """nnU-Net's probability files: ``npz_path`` holds ``probabilities``, float32 (K, z, y, x): the
    (K, X, Y, Z) class probabilities on the grid of the image file ``reference`` with its spatial
    axes reversed, as nnU-Net stores them (a 2D image has z = 1); ``json_path`` their geometry
    (nnU-Net writes a .pkl of properties instead) and ``info``."""
    import json

    import nibabel as nib

    array = np.ascontiguousarray(np.asarray(probabilities, dtype=np.float32).transpose(0, 3, 2, 1))
    image = nib.load(str(reference))
    geometry = {"file": str(reference), "key": "probabilities", "dtype": "float32", "shape": list(array.shape),
                "axes": "(class, z, y, x): the image array's (x, y, z) axes reversed, as nnU-Net; "
                        "probabilities.argmax(0).transpose(2, 1, 0) is the mask as nibabel reads it",
                "image_shape": [int(n) for n in image.shape[:3]], "affine": np.asarray(image.affine).tolist(),
                "spacing_mm": [float(z) for z in image.header.get_zooms()[:3]], **info}

    def save_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, probabilities=array)

    text = json.dumps(geometry, indent=2) + "\n"
    return (_atomic(npz_path, save_npz),
            _atomic(json_path, lambda tmp: tmp.write_text(text, encoding="utf-8")))


def overlay_slices(mask: np.ndarray, count: int = 4) -> list[int]:
    """Up to ``count`` slice indices spread evenly over the slices holding foreground
    (over all slices when none does)."""
    holding = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    pool = holding if holding.size else np.arange(mask.shape[0])
    picks = np.unique(np.round(np.linspace(0, pool.size - 1, min(count, pool.size))).astype(int))
    return [int(pool[i]) for i in picks]


def write_overlay(path: Path, image: np.ndarray, mask: np.ndarray, class_names, title: str,
                  count: int = 4) -> Path:
    """A PNG of a few slices of the (S, H, W) network-grid ``image`` with the coloured ``mask``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    slices = overlay_slices(mask, count)
    colours = matplotlib.colormaps["tab10"].colors
    cmap = ListedColormap([(0, 0, 0, 0)] + [(*colours[i % 10], 0.5) for i in range(len(class_names))])
    fig = Figure(figsize=(2.6 * len(slices), 3.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(slices), squeeze=False)[0]
    for ax, s in zip(axes, slices):
        ax.imshow(image[s], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.imshow(mask[s], cmap=cmap, vmin=0, vmax=len(class_names), interpolation="nearest")
        ax.set_title(f"slice {s}", fontsize=8)
        ax.axis("off")
    fig.legend(handles=[Patch(color=cmap(i + 1), label=n) for i, n in enumerate(class_names)],
               loc="lower center", ncol=min(len(class_names), 6), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.85, bottom=0.12, wspace=0.03)
    return _atomic(path, lambda tmp: fig.savefig(str(tmp), format="png"))
