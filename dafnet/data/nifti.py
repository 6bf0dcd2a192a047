"""Safe NIfTI reading (nibabel): .nii and .nii.gz, 2D/3D/4D, every failure a DafnetError.

Intensities come through ``get_fdata(dtype=float32)``, so ``scl_slope``/``scl_inter``
scaling of integer files is applied. A 4D file gives one 3D volume, chosen by
``volume_index``; a 2D file is one slice (a third axis of length 1 is added).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dafnet.errors import DafnetError

NIFTI_ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class NiftiVolume:
    """One decoded 3D volume of a NIfTI file."""

    data: np.ndarray
    """(X, Y, Z) float32 voxel values (scaling applied)."""
    affine: np.ndarray
    """4x4 voxel-to-world (RAS+, mm) matrix of ``data``."""
    path: Path

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size (mm) along each array axis (norms of the affine's columns)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def nifti_ending(path: str | Path) -> str | None:
    """'.nii.gz' or '.nii' when ``path`` names a NIfTI file, else None."""
    name = Path(path).name.lower()
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return ending
    return None


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, affine) of a NIfTI file without decoding its voxels."""
    image = _load(Path(path))
    return tuple(int(n) for n in image.shape), np.asarray(image.affine, dtype=np.float64)


def read_volume(path: str | Path, volume_index: int | None = None) -> NiftiVolume:
    """Decode one 3D volume of ``path`` (see the module docstring)."""
    path = Path(path)
    image = _load(path)
    shape = tuple(int(n) for n in image.shape)
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DafnetError(f"{path}: the voxel-to-world affine is degenerate:\n{affine}",
                          hint="fix the file's qform/sform (e.g. re-save it with nibabel or SimpleITK)")
    kind = image.get_data_dtype()
    if kind.names is not None or np.issubdtype(kind, np.complexfloating):
        raise DafnetError(f"{path}: its voxels are {'RGB' if kind.names else 'complex'} ({kind}), not one real "
                          "value each", hint="save magnitude (or a single channel) images as float or integer NIfTI")
    try:
        if len(shape) in (2, 3):
            data = np.asarray(image.get_fdata(dtype=np.float32))
        elif len(shape) == 4:
            index = _pick_volume(path, shape, volume_index)
            data = np.asarray(image.dataobj[..., index], dtype=np.float32)  # proxy slicing scales
        else:
            raise DafnetError(f"{path}: a NIfTI image with {len(shape)} dimensions {shape} is not "
                              "supported", hint="give 3D volumes (or 4D with a volume_index)")
    except DafnetError:
        raise
    except Exception as exc:  # any decoding failure means a broken file
        raise DafnetError(f"{path}: cannot decode the voxel data ({_one_line(exc)}); "
                          "the file is corrupt or truncated",
                          hint="re-export or re-copy the file; check it opens in a NIfTI viewer") from exc
    if data.ndim == 2:
        data = data[:, :, None]
    return NiftiVolume(data=data, affine=affine, path=path)


def _pick_volume(path: Path, shape: tuple[int, ...], volume_index: int | None) -> int:
    frames = shape[3]
    if volume_index is None:
        if frames == 1:
            return 0
        raise DafnetError(f"{path} is 4D with {frames} volumes {shape}; which one to use is not set",
                          hint="set data.source.params.volume_index (0-based)")
    if not 0 <= volume_index < frames:
        raise DafnetError(f"{path} has {frames} volumes but volume_index is {volume_index}",
                          hint=f"set data.source.params.volume_index between 0 and {frames - 1}")
    return volume_index


def _load(path: Path):
    import nibabel as nib

    if not path.is_file():
        raise DafnetError(f"NIfTI file {path} does not exist", hint="check the dataset folder")
    if nifti_ending(path) is None:
        raise DafnetError(f"{path} is not a NIfTI file (.nii or .nii.gz)")
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken headers
        raise DafnetError(f"{path}: not a readable NIfTI file ({_one_line(exc)})",
                          hint="re-export or re-copy the file; check it opens in a NIfTI viewer") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DafnetError(f"{path}: not a NIfTI-1/2 image ({type(image).__name__})")
    return image


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())
