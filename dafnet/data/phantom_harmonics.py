"""Smooth closed outlines of the phantom: the polar angle's harmonics (:class:`Angles`, by
recurrence) and their weighted sums (:func:`harmonic_sum`)."""

from __future__ import annotations

import numpy as np


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
