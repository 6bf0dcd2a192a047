"""The per-volume numbers of an experiment's cells pooled for the tables, and the paired test they use.

A volume is ``fold:subject``. The cells of a setting (method, fraction, pairing, ablation) that
differ only in their seed share their volumes: a volume's number is the mean over its seeds, so
every volume counts once and the Wilcoxon pairs stay per volume.
"""

from __future__ import annotations

import math

import numpy as np

from dafnet.experiment.grid import Cell
from dafnet.experiment.spec import FULL


def wilcoxon_p(a: dict[str, float], b: dict[str, float]) -> float:
    """Two-sided Wilcoxon signed-rank p over the keys both share; NaN when it is undefined."""
    from scipy.stats import wilcoxon

    keys = sorted(set(a) & set(b))
    x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    if len(keys) < 2 or np.allclose(x, y):
        return float("nan")
    try:
        return float(wilcoxon(x, y).pvalue)
    except ValueError:
        return float("nan")


class PooledResults:
    """The finished cells' per_volume.json numbers: ``results`` (cell id -> prediction type ->
    subject -> Dice, None when unfinished) and ``alignment`` (cell id -> column, e.g.
    ``align_median_mm``, -> subject -> number; None or missing when the cell has none)."""

    def __init__(self, cells: list[Cell], results: dict[str, dict | None],
                 alignment: dict[str, dict | None] | None = None) -> None:
        self.cells, self.results, self.alignment = cells, results, alignment or {}

    def kinds(self, method: str) -> set[str]:
        return {k for c in self.cells if c.method == method and self.results.get(c.id) for k in self.results[c.id]}

    def matching(self, method: str, fraction: float | None, pairing: str, ablation: str) -> list[Cell]:
        """The cells of a setting (every seed); a training-free method's cells match every fraction."""
        out = []
        for c in self.cells:
            if (c.method, c.pairing, c.ablation) != (method, pairing, ablation):
                continue
            if c.fraction is not None and (fraction is None or not math.isclose(c.fraction, fraction)):
                continue
            out.append(c)
        return out

    def _pooled(self, per_cell: dict, method: str, key: str, fraction: float | None, pairing: str,
                ablation: str) -> tuple[dict[str, float], int]:
        """(volume -> the mean over its seeds of ``per_cell[cell][key][subject]``, how many seeds had any)."""
        seen: dict[str, list[float]] = {}
        seeds = set()
        for c in self.matching(method, fraction, pairing, ablation):
            per_subject = (per_cell.get(c.id) or {}).get(key) or {}
            seeds.update([c.seed] if per_subject else [])
            for subject, v in per_subject.items():  # one list per volume: its number under each seed
                if math.isfinite(v):
                    seen.setdefault(f"{c.fold}:{subject}", []).append(v)
        return {volume: float(np.mean(v)) for volume, v in seen.items()}, len(seeds)

    def values(self, method: str, kind: str, fraction: float | None, pairing: str = "expert",
               ablation: str = FULL) -> dict[str, float]:
        """Volume -> Dice of prediction type ``kind`` (seeds averaged)."""
        return self._pooled(self.results, method, kind, fraction, pairing, ablation)[0]

    def seeds(self, method: str, kind: str, fraction: float | None, pairing: str = "expert",
              ablation: str = FULL) -> int:
        """How many seeds the finished cells with Dice of ``kind`` trained with."""
        return self._pooled(self.results, method, kind, fraction, pairing, ablation)[1]

    def alignment_values(self, method: str, column: str, fraction: float | None, pairing: str = "expert",
                         ablation: str = FULL) -> tuple[dict[str, float], int]:
        """(volume -> the alignment ``column``, seeds averaged; how many seeds had it)."""
        return self._pooled(self.alignment, method, column, fraction, pairing, ablation)

    def copy_method(self) -> str | None:
        """The spec's label of the ``copy`` baseline, if it has one."""
        return next((c.method for c in self.cells if c.recipe is not None and c.recipe.method.name == "copy"), None)


__all__ = ["PooledResults", "wilcoxon_p"]
