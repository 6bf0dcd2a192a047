"""The phantom's continuous anatomy: one subject's heart and thorax as a tissue map.

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


def _lerp(pair, t):
    return pair[0] + (pair[1] - pair[0]) * t


class Angles:
    """cos and sin of k times the polar angle of (x, y), by recurrence (no trigonometry)."""

    def __init__(self, cos: np.ndarray, sin: np.ndarray) -> None:
        self.cos, self.sin = cos, sin
        self._powers = [(np.ones_like(cos), np.zeros_like(sin)), (cos, sin)]

    @staticmethod
    def of(x: np.ndarray, y: np.ndarray) -> Angles:
        r = np.hypot(x, y)
        safe = np.where(r > 0, r, 1.0)
        return Angles(np.where(r > 0, x / safe, 1.0), y / safe)

    def k(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cos k theta, sin k theta)."""
        while len(self._powers) <= k:
            c, s = self._powers[-1]
            self._powers.append((c * self.cos - s * self.sin, s * self.cos + c * self.sin))
        return self._powers[k]


def harmonic_sum(angles: Angles, coeffs: np.ndarray, first: int) -> np.ndarray:
    """sum_k amp_k cos(k theta - phase_k), coeffs (..., K, 2) of amplitude and phase."""
    total = 0.0
    for k in range(coeffs.shape[-2]):
        ck, sk = angles.k(first + k)
        amp, ph = coeffs[..., k, 0], coeffs[..., k, 1]
        total = total + amp * (np.cos(ph) * ck + np.sin(ph) * sk)
    return total


def tissue_map(anat: Anatomy, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Tissue index (int8) at anatomy coordinates ``u``, ``v`` (S, H, W) and ``z`` (S, 1, 1)."""
    t = z / anat.length
    tc = np.clip(t, 0.0, 1.0)
    out = np.full(np.broadcast_shapes(u.shape, v.shape, z.shape), Tissue.AIR, dtype=np.int8)

    fat_level = 1.0 - anat.subcutaneous_fat / anat.body.radii[1]
    wall_level = 1.0 - (anat.subcutaneous_fat + anat.chest_wall) / anat.body.radii[1]
    body = anat.body.level(u, v, t, band=(wall_level, 1.0))
    out[body < 1.0] = Tissue.FAT
    out[body < fat_level] = Tissue.SOFT_TISSUE
    thorax = body < wall_level
    for lung in anat.lungs:
        out[(lung.level(u, v, t) < 1.0) & thorax] = Tissue.LUNG
    out[anat.liver.level(u, v, t) < 1.0] = Tissue.LIVER
    out[anat.stomach.level(u, v, t) < 1.0] = Tissue.STOMACH
    out[anat.spine.level(u, v, t) < 1.0] = Tissue.BONE
    out[anat.aorta.level(u, v, t) < 1.0] = Tissue.AORTA

    # Left ventricle in polar coordinates about its (drifting) centre.
    du = u - (anat.lv_centre[0] + anat.lv_drift[0] * tc)
    dv = v - (anat.lv_centre[1] + anat.lv_drift[1] * tc)
    r, ang = np.hypot(du, dv), Angles.of(du, dv)
    profile = np.sqrt(np.clip(1.0 - tc**2, 0.0, None))
    ell = _lerp(anat.ellipticity, tc)
    ell_angle = 2.0 * _lerp(anat.ellipse_angle, tc)
    c2, s2 = ang.k(2)
    shape = (1.0 + ell * (np.cos(ell_angle) * c2 + np.sin(ell_angle) * s2)
             + harmonic_sum(ang, _lerp(anat.endo_harmonics, tc[..., None, None]), first=3))
    r_endo = np.where(t < 1.0, anat.cavity_radius * profile * shape, 0.0)
    thick = anat.wall_thickness * (
        1.0 + harmonic_sum(ang, _lerp(anat.wall_harmonics, tc[..., None, None]), first=1))
    cap = np.sqrt(np.clip(1.0 - ((t - 1.0) / anat.apex_cap * anat.length) ** 2, 0.0, None))
    r_epi = r_endo + thick * np.where(t < 1.0, 1.0, cap)

    # Right ventricle: an ellipse beside the LV, outside its epicardium.
    r_epi_mean = anat.cavity_radius * profile + anat.wall_thickness
    rv_scale = np.sqrt(np.clip(1.0 - (t / anat.rv_end) ** 2, 0.0, None))
    cu, cv = np.cos(anat.rv_direction), np.sin(anat.rv_direction)
    off = anat.rv_offset * r_epi_mean
    a_ = du - off * cu
    b_ = dv - off * cv
    along, across = a_ * cu + b_ * cv, -a_ * cv + b_ * cu
    ra = np.maximum(anat.rv_radii[0] * r_epi_mean * rv_scale, 1e-3)
    rb = np.maximum(anat.rv_radii[1] * r_epi_mean * rv_scale, 1e-3)
    rv_level = np.hypot(along / ra, across / rb)
    rv_mean_radius = np.sqrt(ra * rb)
    outside_lv = r >= r_epi
    rv_blood = (rv_level < 1.0) & outside_lv & (rv_scale > 0)
    rv_wall = (rv_level < 1.0 + anat.rv_wall / rv_mean_radius) & outside_lv & ~rv_blood & (rv_scale > 0)

    fat_w = anat.epicardial_fat * np.clip(0.4 + harmonic_sum(ang, anat.fat_harmonics, 1), 0.0, None)
    heart_fat = ((r < r_epi + fat_w) & outside_lv) | (
        (rv_level < 1.0 + (anat.rv_wall + 0.6 * fat_w) / rv_mean_radius) & outside_lv & (rv_scale > 0))
    out[heart_fat] = Tissue.EPICARDIAL_FAT
    out[rv_wall] = Tissue.RV_WALL
    out[rv_blood] = Tissue.RV_BLOOD
    myo = (r < r_epi) & (r >= r_endo)
    out[myo] = Tissue.MYOCARDIUM
    out[r < r_endo] = Tissue.LV_BLOOD
    for pap_angle in anat.papillary_angles:
        pu, pv = 0.62 * r_endo * np.cos(pap_angle), 0.62 * r_endo * np.sin(pap_angle)
        papillary = np.hypot(du - pu, dv - pv) < anat.papillary_size * anat.cavity_radius * profile
        out[papillary & (r < r_endo) & (tc > 0.15) & (tc < 0.8)] = Tissue.PAPILLARY

    depth = (r - r_endo) / np.maximum(r_epi - r_endo, 1e-6)
    for scar in anat.scars:
        m = anat.oedema_margin
        for tissue, grow in ((Tissue.OEDEMA, m), (Tissue.SCAR, 0.0)):
            half = min(scar.width / 2 + grow, np.pi)
            cos_diff = ang.cos * np.cos(scar.angle) + ang.sin * np.sin(scar.angle)
            inside = (myo & (cos_diff > np.cos(half))
                      & (t >= scar.t_range[0] - grow / 3) & (t <= scar.t_range[1] + grow / 3)
                      & (depth <= scar.transmurality + grow))
            out[inside & (out != Tissue.SCAR)] = tissue
    return out
