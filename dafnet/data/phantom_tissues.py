"""The phantom's anatomy drawn as a tissue map: :func:`tissue_map` at anatomy coordinates, the body
and its organs first, then the heart (left ventricle in polar coordinates about its drifting centre,
the right ventricle beside it, epicardial fat, papillary muscles, scars with their oedema).
Coordinates as in :mod:`dafnet.data.phantom_shapes`.
"""

from __future__ import annotations

import numpy as np

from dafnet.data.phantom_harmonics import Angles, harmonic_sum
from dafnet.data.phantom_shapes import Anatomy, Tissue


def _lerp(pair, t):
    return pair[0] + (pair[1] - pair[0]) * t


def tissue_map(anat: Anatomy, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Tissue index (int8) at anatomy coordinates ``u``, ``v`` (S, H, W) and ``z`` (S, 1, 1)."""
    t = z / anat.length
    tc = np.clip(t, 0.0, 1.0)
    out = np.full(np.broadcast_shapes(u.shape, v.shape, z.shape), Tissue.AIR, dtype=np.int8)
    _paint_body(out, anat, u, v, t)
    du = u - (anat.lv_centre[0] + anat.lv_drift[0] * tc)
    dv = v - (anat.lv_centre[1] + anat.lv_drift[1] * tc)
    heart = _Heart(anat, t, tc, du, dv)
    heart.paint(out)
    return out


def _paint_body(out: np.ndarray, anat: Anatomy, u, v, t) -> None:
    """Fat, soft tissue, lungs (inside the thorax), liver, stomach, spine and aorta."""
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


class _Heart:
    """The heart of one subject at (``du``, ``dv``) about the LV centre, ``t`` along its long axis
    (``tc`` clipped to [0, 1])."""

    def __init__(self, anat: Anatomy, t, tc, du, dv) -> None:
        self.anat, self.t, self.tc, self.du, self.dv = anat, t, tc, du, dv
        self.r, self.ang = np.hypot(du, dv), Angles.of(du, dv)
        self.profile = np.sqrt(np.clip(1.0 - tc**2, 0.0, None))
        self.r_endo, self.r_epi = self._lv_radii()

    def _lv_radii(self):
        """Endocardial and epicardial radius of the left ventricle at each point's angle."""
        anat, t, tc, ang = self.anat, self.t, self.tc, self.ang
        ell = _lerp(anat.ellipticity, tc)
        ell_angle = 2.0 * _lerp(anat.ellipse_angle, tc)
        c2, s2 = ang.k(2)
        shape = (1.0 + ell * (np.cos(ell_angle) * c2 + np.sin(ell_angle) * s2)
                 + harmonic_sum(ang, _lerp(anat.endo_harmonics, tc[..., None, None]), first=3))
        r_endo = np.where(t < 1.0, anat.cavity_radius * self.profile * shape, 0.0)
        thick = anat.wall_thickness * (
            1.0 + harmonic_sum(ang, _lerp(anat.wall_harmonics, tc[..., None, None]), first=1))
        cap = np.sqrt(np.clip(1.0 - ((t - 1.0) / anat.apex_cap * anat.length) ** 2, 0.0, None))
        return r_endo, r_endo + thick * np.where(t < 1.0, 1.0, cap)

    def _right_ventricle(self):
        """(level, mean radius, present): an ellipse beside the LV; level < 1 inside it."""
        anat, t = self.anat, self.t
        r_epi_mean = anat.cavity_radius * self.profile + anat.wall_thickness
        rv_scale = np.sqrt(np.clip(1.0 - (t / anat.rv_end) ** 2, 0.0, None))
        cu, cv = np.cos(anat.rv_direction), np.sin(anat.rv_direction)
        off = anat.rv_offset * r_epi_mean
        a_ = self.du - off * cu
        b_ = self.dv - off * cv
        along, across = a_ * cu + b_ * cv, -a_ * cv + b_ * cu
        ra = np.maximum(anat.rv_radii[0] * r_epi_mean * rv_scale, 1e-3)
        rb = np.maximum(anat.rv_radii[1] * r_epi_mean * rv_scale, 1e-3)
        return np.hypot(along / ra, across / rb), np.sqrt(ra * rb), rv_scale > 0

    def paint(self, out: np.ndarray) -> None:
        """Epicardial fat, RV wall and blood (outside the LV epicardium), myocardium, LV blood,
        papillary muscles, then the scars."""
        anat, r, r_endo, r_epi = self.anat, self.r, self.r_endo, self.r_epi
        rv_level, rv_mean_radius, rv_present = self._right_ventricle()
        outside_lv = r >= r_epi
        rv_blood = (rv_level < 1.0) & outside_lv & rv_present
        rv_wall = (rv_level < 1.0 + anat.rv_wall / rv_mean_radius) & outside_lv & ~rv_blood & rv_present

        fat_w = anat.epicardial_fat * np.clip(0.4 + harmonic_sum(self.ang, anat.fat_harmonics, 1), 0.0, None)
        heart_fat = ((r < r_epi + fat_w) & outside_lv) | (
            (rv_level < 1.0 + (anat.rv_wall + 0.6 * fat_w) / rv_mean_radius) & outside_lv & rv_present)
        out[heart_fat] = Tissue.EPICARDIAL_FAT
        out[rv_wall] = Tissue.RV_WALL
        out[rv_blood] = Tissue.RV_BLOOD
        myo = (r < r_epi) & (r >= r_endo)
        out[myo] = Tissue.MYOCARDIUM
        out[r < r_endo] = Tissue.LV_BLOOD
        tc = self.tc
        for pap_angle in anat.papillary_angles:
            pu, pv = 0.62 * r_endo * np.cos(pap_angle), 0.62 * r_endo * np.sin(pap_angle)
            papillary = np.hypot(self.du - pu, self.dv - pv) < anat.papillary_size * anat.cavity_radius * self.profile
            out[papillary & (r < r_endo) & (tc > 0.15) & (tc < 0.8)] = Tissue.PAPILLARY
        self._paint_scars(out, myo)

    def _paint_scars(self, out: np.ndarray, myo: np.ndarray) -> None:
        """Each scar and the oedema around it, inside the myocardium, to its transmurality."""
        anat, t, ang = self.anat, self.t, self.ang
        depth = (self.r - self.r_endo) / np.maximum(self.r_epi - self.r_endo, 1e-6)
        for scar in anat.scars:
            m = anat.oedema_margin
            for tissue, grow in ((Tissue.OEDEMA, m), (Tissue.SCAR, 0.0)):
                half = min(scar.width / 2 + grow, np.pi)
                cos_diff = ang.cos * np.cos(scar.angle) + ang.sin * np.sin(scar.angle)
                inside = (myo & (cos_diff > np.cos(half))
                          & (t >= scar.t_range[0] - grow / 3) & (t <= scar.t_range[1] + grow / 3)
                          & (depth <= scar.transmurality + grow))
                out[inside & (out != Tissue.SCAR)] = tissue
