"""Cross-modality slice pairing by slice position (method.md 2, Sec. III-F).

Volumes of one subject need not have the same slices: a target slice is paired with
the slice of another modality whose centre is nearest along the stack normal (the
expert pair). Non-expert pairing draws k candidates from the slices within +-radius
slices of the nearest one; with ``shuffled`` pairing the candidate order is random
(and with k = 1 the one candidate is a random slice of that window: the paper's
"shuffled by up to two positions" lower bound).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dafnet.errors import DafnetError

Pairing = Literal["expert", "shuffled"]


def nearest_slices(target_positions, other_positions) -> np.ndarray:
    """For each target slice, the index of the nearest other slice (ties: the lower index)."""
    target = np.asarray(target_positions, dtype=np.float64).reshape(-1)
    other = np.asarray(other_positions, dtype=np.float64).reshape(-1)
    if other.size == 0:
        raise DafnetError("cannot pair slices: the other volume has no slices")
    return np.abs(other[None, :] - target[:, None]).argmin(axis=1)


def candidate_slices(target_position: float, other_positions, k: int, radius: int = 2) -> np.ndarray:
    """k slice indices of the other volume around the nearest one, nearest first.

    Candidates are the slices within +-``radius`` slices of the nearest one, ordered by
    distance to ``target_position`` (then index). When the volume has fewer than k
    slices in that window, the nearest slice is repeated.
    """
    if k < 1:
        raise DafnetError(f"number of pairing candidates must be >= 1, got {k}")
    if k > 2 * radius + 1:
        raise DafnetError(
            f"{k} pairing candidates do not fit in +-{radius} slices ({2 * radius + 1} slices)",
            hint="lower num_candidates or raise candidate_radius",
        )
    other = np.asarray(other_positions, dtype=np.float64).reshape(-1)
    nearest = int(nearest_slices([target_position], other)[0])
    window = np.arange(max(0, nearest - radius), min(other.size, nearest + radius + 1))
    order = np.lexsort((window, np.abs(other[window] - target_position)))
    chosen = window[order][:k]
    if chosen.size < k:
        chosen = np.concatenate([chosen, np.full(k - chosen.size, nearest)])
    return chosen.astype(np.int64)


def draw_candidates(target_position: float, other_positions, k: int, radius: int,
                    pairing: Pairing, rng: np.random.Generator | None) -> np.ndarray:
    """The k candidates to use for one sample: nearest first (expert) or shuffled.

    ``shuffled`` with k = 1 picks one slice uniformly from the +-radius window around the
    nearest slice; with k > 1 it returns the expert candidates in a random order.
    """
    if pairing == "expert":
        return candidate_slices(target_position, other_positions, k, radius)
    if pairing != "shuffled":
        raise DafnetError(f"unknown pairing {pairing!r}", hint="use 'expert' or 'shuffled'")
    if rng is None:
        raise DafnetError("shuffled pairing needs a random generator")
    if k == 1:
        window = np.unique(candidate_slices(target_position, other_positions, 2 * radius + 1, radius))
        return np.asarray([rng.choice(window)], dtype=np.int64)
    chosen = candidate_slices(target_position, other_positions, k, radius)
    return chosen[rng.permutation(k)]


__all__ = ["Pairing", "candidate_slices", "draw_candidates", "nearest_slices"]
