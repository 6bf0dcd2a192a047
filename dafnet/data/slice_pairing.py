"""Cross-modality slice pairing by slice position (method.md 2, Sec. III-F).

Volumes of one subject need not have the same slices: a target slice is paired with
the slice of another modality whose centre is nearest along the stack normal (the
expert pair). Non-expert pairing (k > 1) draws candidates as the original code does
(``MultimodalPairedData.expand_pairs``): the expert slice first, then k - 1 slices drawn
at random without replacement from the other slices within +-radius slices of it
(the window clipped to the stack). With ``shuffled`` pairing the candidate order is
random, and with k = 1 the one candidate is a random slice of that window (the paper's
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


def candidate_window(target_position: float, other_positions, k: int, radius: int) -> tuple[int, np.ndarray]:
    """The nearest slice and the slices within +-``radius`` of it, clipped to the stack."""
    if k < 1:
        raise DafnetError(f"number of pairing candidates must be >= 1, got {k}")
    if k > 2 * radius + 1:
        raise DafnetError(
            f"{k} pairing candidates do not fit in +-{radius} slices ({2 * radius + 1} slices)",
            hint="lower num_candidates or raise candidate_radius",
        )
    other = np.asarray(other_positions, dtype=np.float64).reshape(-1)
    nearest = int(nearest_slices([target_position], other)[0])
    return nearest, np.arange(max(0, nearest - radius), min(other.size, nearest + radius + 1))


def draw_candidates(target_position: float, other_positions, k: int, radius: int,
                    pairing: Pairing, rng: np.random.Generator | None) -> np.ndarray:
    """The k candidate slice indices of one sample.

    ``expert``: the nearest slice, then (k > 1) k - 1 others of the window drawn with ``rng``
    without replacement; when the clipped window has fewer than k slices, the nearest slice
    fills the rest. ``shuffled``: the same draw in a random order; with k = 1 one slice drawn
    uniformly from the window.
    """
    if pairing not in ("expert", "shuffled"):
        raise DafnetError(f"unknown pairing {pairing!r}", hint="use 'expert' or 'shuffled'")
    nearest, window = candidate_window(target_position, other_positions, k, radius)
    if k == 1 and pairing == "expert":
        return np.asarray([nearest], dtype=np.int64)
    if rng is None:
        raise DafnetError(f"{pairing} pairing with {k} candidate(s) needs a random generator")
    if k == 1:
        return np.asarray([rng.choice(window)], dtype=np.int64)
    others = window[window != nearest]
    drawn = rng.choice(others, size=min(k - 1, others.size), replace=False)
    chosen = np.concatenate([[nearest], drawn, np.full(k - 1 - drawn.size, nearest)]).astype(np.int64)
    return chosen if pairing == "expert" else chosen[rng.permutation(k)]


__all__ = ["Pairing", "candidate_window", "draw_candidates", "nearest_slices"]
