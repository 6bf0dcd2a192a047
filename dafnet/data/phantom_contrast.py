"""MR-like contrasts of the phantom: tissue map -> image with texture, bias field and noise."""

from __future__ import annotations

import functools

import numpy as np
from scipy import interpolate, ndimage

from dafnet.data.phantom_shapes import NUM_TISSUES, Tissue

MODALITY_NAMES: tuple[str, ...] = ("cine", "lge", "t2")
"""Every modality the phantom can render, in its canonical order."""

_T = Tissue
_CONTRAST: dict[str, dict[Tissue, float]] = {
    # bSSFP cine: bright blood and fat, grey myocardium, dark lungs.
    "cine": {_T.AIR: 0.0, _T.SOFT_TISSUE: 0.28, _T.FAT: 0.8, _T.LUNG: 0.05, _T.LIVER: 0.32,
             _T.AORTA: 0.78, _T.EPICARDIAL_FAT: 0.75, _T.RV_WALL: 0.22, _T.RV_BLOOD: 0.82,
             _T.MYOCARDIUM: 0.2, _T.LV_BLOOD: 0.88, _T.PAPILLARY: 0.22, _T.OEDEMA: 0.23,
             _T.SCAR: 0.2, _T.BONE: 0.45, _T.STOMACH: 0.6},
    # Late gadolinium enhancement: nulled myocardium, bright scar, moderately bright blood.
    "lge": {_T.AIR: 0.0, _T.SOFT_TISSUE: 0.22, _T.FAT: 0.55, _T.LUNG: 0.03, _T.LIVER: 0.35,
            _T.AORTA: 0.5, _T.EPICARDIAL_FAT: 0.5, _T.RV_WALL: 0.07, _T.RV_BLOOD: 0.55,
            _T.MYOCARDIUM: 0.04, _T.LV_BLOOD: 0.6, _T.PAPILLARY: 0.06, _T.OEDEMA: 0.05,
            _T.SCAR: 0.95, _T.BONE: 0.3, _T.STOMACH: 0.25},
    # Black-blood, fat-suppressed T2: dark blood and fat, grey myocardium, bright oedema.
    "t2": {_T.AIR: 0.0, _T.SOFT_TISSUE: 0.3, _T.FAT: 0.12, _T.LUNG: 0.04, _T.LIVER: 0.2,
           _T.AORTA: 0.05, _T.EPICARDIAL_FAT: 0.1, _T.RV_WALL: 0.33, _T.RV_BLOOD: 0.1,
           _T.MYOCARDIUM: 0.38, _T.LV_BLOOD: 0.08, _T.PAPILLARY: 0.36, _T.OEDEMA: 0.75,
           _T.SCAR: 0.7, _T.BONE: 0.15, _T.STOMACH: 0.75},
}
_LUNG_VESSELS = {"cine": 0.5, "lge": 0.35, "t2": 0.0}
"""Brightness of the pulmonary vessels speckled over the lungs (black blood in T2)."""
_NOISE_SCALE = {"cine": 1.0, "lge": 1.5, "t2": 1.3}
"""Relative noise per modality (LGE and T2 have less signal than cine)."""

CONTRAST_TABLES: dict[str, np.ndarray] = {
    name: np.array([table[t] for t in Tissue], dtype=np.float64) for name, table in _CONTRAST.items()
}
assert all(len(v) == NUM_TISSUES for v in CONTRAST_TABLES.values())


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field smoothed in-plane (axes -2, -1)."""
    noise = rng.standard_normal(shape)
    sigma = (0.0,) * (len(shape) - 2) + (sigma_px, sigma_px)
    field = ndimage.gaussian_filter(noise, sigma, mode="reflect", truncate=3.0)
    return (field - field.mean()) / (field.std() + 1e-12)


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) natural-cubic-spline interpolation weights, end points aligned."""
    if n_in == 1:
        matrix = np.ones((n_out, 1))
    else:
        x_in = np.linspace(0.0, 1.0, n_in)
        spline = interpolate.CubicSpline(x_in, np.eye(n_in), bc_type="natural")
        matrix = spline(np.linspace(0.0, 1.0, n_out))
    matrix.flags.writeable = False
    return matrix


def upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable cubic-spline upsampling of a 3-D coarse grid to exactly ``shape``."""
    ms, mh, mw = (_interpolation_matrix(n, c) for n, c in zip(shape, coarse.shape))
    return np.einsum("ai,bj,ck,ijk->abc", ms, mh, mw, coarse, optimize=True)


def render(tissue: np.ndarray, modality: str, rng: np.random.Generator, noise: float,
           spacing_mm: float) -> np.ndarray:
    """An MR-like (S, H, W) float32 image of a tissue map, min-max rescaled to [-1, 1] per slice."""
    shape = tissue.shape
    table = CONTRAST_TABLES[modality] * rng.uniform(0.9, 1.1, NUM_TISSUES)
    # Per-tissue texture: each tissue mixes three smooth fields with its own weights.
    weights = rng.normal(0.0, 0.06, (3, NUM_TISSUES))
    texture = 1.0
    for w, scale_mm in zip(weights, (3.0, 6.0, 12.0)):
        texture = texture + w[tissue] * smooth_field(rng, shape, scale_mm / spacing_mm)
    image = table[tissue] * np.clip(texture, 0.5, 1.5)
    if _LUNG_VESSELS[modality]:
        vessels = np.clip(smooth_field(rng, shape, 2.5 / spacing_mm) - 1.6, 0.0, None)
        image += np.where(tissue == Tissue.LUNG, _LUNG_VESSELS[modality] * vessels, 0.0)
    # Point-spread function: a slight in-plane blur (partial volume at edges).
    image = ndimage.gaussian_filter(image, (0.0, 0.6, 0.6), truncate=3.0)
    # Multiplicative bias field, smooth over the whole stack (coil sensitivity).
    coarse = rng.normal(0.0, 0.18, (min(2, shape[0]), 3, 3))
    image = image * np.exp(upsample(coarse, shape))
    # Rician noise: magnitude of a complex signal with Gaussian noise in both channels.
    sigma = noise * _NOISE_SCALE[modality]
    real = image + sigma * rng.standard_normal(shape)
    imag = sigma * rng.standard_normal(shape)
    image = np.hypot(real, imag)
    lo = image.min(axis=(1, 2), keepdims=True)
    hi = image.max(axis=(1, 2), keepdims=True)
    return (2.0 * (image - lo) / np.maximum(hi - lo, 1e-12) - 1.0).astype(np.float32)
