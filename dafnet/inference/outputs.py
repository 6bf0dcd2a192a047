"""Writing predictions: NIfTI masks on the input file's grid and overlay PNGs, each written to a
temporary file in the output folder and renamed into place (readers never see half a file)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from dafnet.errors import DafnetError


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` (and parents) and check that files can be written there."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise DafnetError(f"output {out_dir} exists and is not a folder", hint="choose a folder for --out")
    probe = out_dir / f".dafnet-write-test-{uuid.uuid4().hex[:8]}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DafnetError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}",
                          hint="choose a writable folder for --out") from exc
    return out_dir


def _atomic(path: Path, write) -> Path:
    tmp = path.with_name(f".{uuid.uuid4().hex[:8]}.tmp-{path.name}")  # keeps the file ending
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DafnetError(f"cannot write {path}: {exc.strerror or exc}", hint="check the output folder") from exc
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    import matplotlib

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
