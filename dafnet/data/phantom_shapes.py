"""The phantom's continuous anatomy: one subject's heart and thorax, sampled as shape parameters
(drawn as a tissue map by :mod:`dafnet.data.phantom_tissues`).

Coordinates are millimetres in the subject's anatomy frame: ``u`` to the image right
(patient left), ``v`` to the image bottom (posterior), ``z`` along the left-ventricular
long axis from the base (z = 0) towards the apex (z = ``length``). Every shape parameter
is a smooth function of ``t = z / length``, so neighbouring slices look alike and the
LV shrinks and the RV vanishes towards the apex.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from dafnet.data.phantom_harmonics import Angles, harmonic_sum


class Tissue(IntEnum):
    """Tissue classes of the phantom (what contrasts are defined for)."""

    AIR = 0
    SOFT_TISSUE = 1
    FAT = 2
    LUNG = 3
    LIVER = 4
    AORTA = 5
    EPICARDIAL_FAT = 6
    RV_WALL = 7
    RV_BLOOD = 8
    MYOCARDIUM = 9
    LV_BLOOD = 10
    PAPILLARY = 11
    OEDEMA = 12
    SCAR = 13
    BONE = 14
    STOMACH = 15


NUM_TISSUES = len(Tissue)

LABEL_OF_TISSUE = np.zeros(NUM_TISSUES, dtype=np.int64)
"""Segmentation label per tissue: 1 LV blood pool (papillary muscles included), 2 myocardium
(scar and oedema included), 3 RV blood pool, 0 everything else."""
LABEL_OF_TISSUE[[Tissue.LV_BLOOD, Tissue.PAPILLARY]] = 1
LABEL_OF_TISSUE[[Tissue.MYOCARDIUM, Tissue.SCAR, Tissue.OEDEMA]] = 2
LABEL_OF_TISSUE[Tissue.RV_BLOOD] = 3


@dataclass(frozen=True)
class Blob:
    """An ellipse with a harmonically perturbed outline; radii may grow along the stack."""

    centre: tuple[float, float]
    radii: tuple[float, float]
    angle: float
    harmonics: np.ndarray
    """(K, 2): amplitude and phase of the outline harmonics k = 2..K+1."""
    growth: tuple[float, float] = (0.0, 0.0)
    """The radii are scaled by smoothstep((t - growth[0]) / (growth[1] - growth[0])) when set."""

    def level(self, u: np.ndarray, v: np.ndarray, t: np.ndarray,
              band: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """< 1 inside, about 1 + d / radius at distance d outside.

        Exact only where it lies near ``band``; elsewhere it is on the right side of every
        threshold in ``band`` (the outline is evaluated only where it can matter).
        """
        du, dv = u - self.centre[0], v - self.centre[1]
        c, s = np.cos(self.angle), np.sin(self.angle)
        a, b = c * du + s * dv, -s * du + c * dv
        scale = 1.0
        if self.growth != (0.0, 0.0):
            scale = smoothstep((t - self.growth[0]) / (self.growth[1] - self.growth[0]))
            scale = np.maximum(scale, 1e-3)
        rho = np.hypot(a / (self.radii[0] * scale), b / (self.radii[1] * scale))
        slack = float(np.abs(self.harmonics[:, 0]).sum())
        near = (rho > band[0] * (1.0 - slack)) & (rho < band[1] * (1.0 + slack))
        outline = 1.0 + harmonic_sum(Angles.of(a[near], b[near]), self.harmonics, first=2)
        rho[near] /= outline
        return rho


@dataclass(frozen=True)
class Scar:
    """A myocardial infarct: an angular sector over a range of t, from the endocardium out."""

    angle: float
    width: float
    t_range: tuple[float, float]
    transmurality: float
    """Fraction of the wall (from the endocardium) the scar reaches."""


@dataclass(frozen=True)
class Anatomy:
    """Everything that defines one subject's anatomy (sampled by :func:`sample_anatomy`)."""

    length: float
    cavity_radius: float
    wall_thickness: float
    apex_cap: float
    lv_centre: tuple[float, float]
    lv_drift: tuple[float, float]
    ellipticity: tuple[float, float]
    ellipse_angle: tuple[float, float]
    endo_harmonics: np.ndarray
    """(2, K, 2): base/apex x amplitude, phase of cavity harmonics k = 3..K+2."""
    wall_harmonics: np.ndarray
    """(2, K, 2): base/apex x amplitude, phase of wall-thickness harmonics k = 1..K."""
    papillary_angles: tuple[float, float]
    papillary_size: float
    rv_direction: float
    rv_offset: float
    rv_radii: tuple[float, float]
    rv_end: float
    rv_wall: float
    epicardial_fat: float
    fat_harmonics: np.ndarray
    body: Blob
    subcutaneous_fat: float
    chest_wall: float
    """Thickness (mm) of the muscle layer between the subcutaneous fat and the lungs."""
    lungs: tuple[Blob, Blob]
    liver: Blob
    aorta: Blob
    spine: Blob
    stomach: Blob
    scars: tuple[Scar, ...]
    oedema_margin: float
    table_offset: float
    """Subject's world position (mm) of the base plane along the stack normal."""


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _harmonics(rng: np.random.Generator, count: int, max_amp: float, shape=()) -> np.ndarray:
    amp = rng.uniform(0.0, max_amp, size=shape + (count,))
    phase = rng.uniform(-np.pi, np.pi, size=shape + (count,))
    return np.stack([amp, phase], axis=-1)


def _blob(rng, centre, radii, jitter, angle_sd=0.3, max_amp=0.06, growth=(0.0, 0.0)) -> Blob:
    centre = tuple(float(c + rng.normal(0, jitter)) for c in centre)
    radii = tuple(float(r * rng.uniform(0.85, 1.15)) for r in radii)
    return Blob(centre, radii, float(rng.normal(0, angle_sd)), _harmonics(rng, 3, max_amp), growth)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one subject's anatomy (all sizes in mm)."""
    lv = (float(rng.uniform(6, 16)), float(rng.uniform(-6, 6)))
    n_scars = int(rng.choice([0, 1, 1, 2]))
    scars = []
    for _ in range(n_scars):
        start = float(rng.uniform(0.0, 0.6))
        scars.append(Scar(float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(0.6, 1.6)),
                          (start, start + float(rng.uniform(0.3, 0.8))),
                          float(rng.uniform(0.35, 1.0))))
    return Anatomy(
        length=float(rng.uniform(72, 92)),
        cavity_radius=float(rng.uniform(21, 27)),
        wall_thickness=float(rng.uniform(7, 11)),
        apex_cap=float(rng.uniform(6, 10)),
        lv_centre=lv,
        lv_drift=(float(rng.normal(0, 4)), float(rng.normal(0, 4))),
        ellipticity=(float(rng.uniform(0.0, 0.12)), float(rng.uniform(0.0, 0.15))),
        ellipse_angle=(float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(-np.pi, np.pi))),
        endo_harmonics=_harmonics(rng, 2, 0.05, (2,)),
        wall_harmonics=_harmonics(rng, 3, 0.15, (2,)),
        papillary_angles=(float(-0.8 + rng.normal(0, 0.2)), float(2.0 + rng.normal(0, 0.2))),
        papillary_size=float(rng.uniform(0.14, 0.22)),
        rv_direction=float(np.pi + rng.uniform(0.1, 0.45)),
        rv_offset=float(rng.uniform(0.6, 0.75)),
        rv_radii=(float(rng.uniform(0.85, 1.05)), float(rng.uniform(1.45, 1.75))),
        rv_end=float(rng.uniform(0.68, 0.85)),
        rv_wall=float(rng.uniform(2.5, 4.0)),
        epicardial_fat=float(rng.uniform(2.0, 5.0)),
        fat_harmonics=_harmonics(rng, 3, 0.8),
        body=_blob(rng, (0.0, 55.0), (165.0, 125.0), 5.0, angle_sd=0.03, max_amp=0.02),
        subcutaneous_fat=float(rng.uniform(6, 16)),
        chest_wall=float(rng.uniform(8, 16)),
        lungs=(_blob(rng, (lv[0] + 78.0, lv[1] + 10.0), (42.0, 62.0), 5.0, max_amp=0.1),
               _blob(rng, (lv[0] - 95.0, lv[1] + 15.0), (40.0, 62.0), 5.0, max_amp=0.1)),
        liver=_blob(rng, (lv[0] - 70.0, lv[1] + 55.0), (60.0, 48.0), 6.0, max_amp=0.1,
                    growth=(float(rng.uniform(0.0, 0.3)), 1.2)),
        aorta=_blob(rng, (lv[0] + 18.0, lv[1] + 62.0), (11.0, 11.0), 3.0, max_amp=0.02),
        spine=_blob(rng, (lv[0] - 12.0, lv[1] + 100.0), (17.0, 15.0), 4.0, max_amp=0.04),
        stomach=_blob(rng, (lv[0] + 60.0, lv[1] + 45.0), (32.0, 24.0), 6.0, max_amp=0.12,
                      growth=(float(rng.uniform(0.35, 0.7)), 1.3)),
        scars=tuple(scars),
        oedema_margin=float(rng.uniform(0.2, 0.5)),
        table_offset=float(rng.uniform(-60, 60)),
    )


def __getattr__(name: str):
    """``tissue_map`` moved to :mod:`dafnet.data.phantom_tissues` (which imports this module); still
    importable from here."""
    if name == "tissue_map":
        from dafnet.data import phantom_tissues

        return getattr(phantom_tissues, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
