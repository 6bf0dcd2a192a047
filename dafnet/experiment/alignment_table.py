"""The alignment table: the aligner's error against the truth next to the identity's, per fraction.

One row per method that tabulates ``aligned_copy`` (its ``predictions``). An entry pools the
per-volume medians of ``dafnet evaluate --metric alignment`` (``align_median_mm`` and
``identity_median_mm``: the median in-plane error in mm over the target's foreground of a test
volume, of the learned aligner and of no alignment) over the folds, a volume's numbers first
averaged over its seeds: the mean ± std over volumes of the aligner's medians and of the
identity's, on how many volumes the aligner's is the smaller, and the two-sided Wilcoxon p
between the two (``52 ± 8 vs 70 ± 9 (9/11 < identity, p 0.02)``; mm). n/a where no cell has
the numbers: data without the truth's coordinates (only the phantom has them), or cells whose
per_volume.json predates them (``dafnet experiment`` adds them without training).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dafnet.experiment.pooling import PooledResults, wilcoxon_p
from dafnet.experiment.references import REFERENCE
from dafnet.experiment.table_format import Table, fewer_folds_note, number_text

ALIGNER, IDENTITY = "align_median_mm", "identity_median_mm"
"""The per-volume alignment columns the table pools."""


def mean_std(values: dict[str, float]) -> tuple[float, float]:
    """(mean, population std) of the values; NaN without any."""
    numbers = list(values.values())
    return (float(np.mean(numbers)), float(np.std(numbers))) if numbers else (float("nan"), float("nan"))


@dataclass
class AlignmentEntry:
    """One setting's pooled per-volume medians, the aligner's and the identity's."""

    values: dict[str, float]
    """``fold:subject`` -> the aligner's median error (mm)."""
    identity: dict[str, float] = field(default_factory=dict)
    """``fold:subject`` -> the identity's median error (mm)."""
    seeds: int = 0
    """How many seeds the cells with numbers trained with (0: none)."""

    @property
    def shared(self) -> list[str]:
        """Volumes with both numbers."""
        return sorted(set(self.values) & set(self.identity))

    @property
    def better(self) -> int:
        """Volumes whose aligner error is below the identity's."""
        return sum(self.values[k] < self.identity[k] for k in self.shared)

    @property
    def p_value(self) -> float:
        """Two-sided Wilcoxon p, aligner vs identity over the shared volumes (NaN when undefined)."""
        return wilcoxon_p(self.values, self.identity)

    def text(self) -> str:
        if not self.values:
            return "n/a"
        (a, a_std), (i, i_std) = mean_std(self.values), mean_std(self.identity)
        p = f", p {self.p_value:.2g}" if math.isfinite(self.p_value) else ""
        return f"{a:.1f} ± {a_std:.1f} vs {i:.1f} ± {i_std:.1f} ({self.better}/{len(self.shared)} < identity{p})"


class AlignmentTable(Table):
    """A :class:`Table` of :class:`AlignmentEntry` (same markdown, its own CSV columns)."""

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "column", "aligner_mm_mean", "aligner_mm_std", "identity_mm_mean",
                             "identity_mm_std", "volumes", "volumes_aligner_better", "p_value_vs_identity", "seeds"])
            for label, entries in self.rows:
                for column, e in zip(self.columns, entries):
                    numbers = [*mean_std(e.values), *mean_std(e.identity)]
                    writer.writerow([label, column, *(number_text(x) for x in numbers), len(e.values),
                                     e.better if e.values else "", number_text(e.p_value), e.seeds])


def alignment_entry(results: PooledResults, method: str, fraction: float | None) -> AlignmentEntry:
    """The pooled medians of ``method``'s expert-paired, un-ablated cells at ``fraction``."""
    aligner, seeds = results.alignment_values(method, ALIGNER, fraction)
    identity, _ = results.alignment_values(method, IDENTITY, fraction)
    return AlignmentEntry(aligner, identity, seeds)


def alignment_table(spec, results: PooledResults, methods: list[str], columns: list[tuple[str, float]],
                    part: str = "test") -> AlignmentTable:
    """The table of ``methods`` (those that tabulate ``aligned_copy``) over ``columns`` (label, fraction)."""
    table = AlignmentTable(
        "alignment", f"Alignment error against the truth (median mm per {part} volume)", [c[0] for c in columns],
        note=f"in-plane error (mm) over the target's foreground against the truth's coordinates, the median of each "
             f"{part} volume of folds {spec.folds}{fewer_folds_note(spec)} (averaged over its seeds): the learned "
             "aligner's mean ± std over "
             "volumes vs the identity's (no alignment); (k/n < identity, p): volumes where the aligner's error "
             "is the smaller, and the Wilcoxon p between the two. n/a: no numbers (data without the truth's "
             "coordinates, or cells evaluated before they were recorded).")
    for method in methods:
        table.rows.append((method, [alignment_entry(results, method, f) for _, f in columns]))
    return table


def tabulates_aligned_copy(spec, method: str) -> bool:
    """Whether the spec's ``predictions`` of ``method`` list ``aligned_copy``."""
    return REFERENCE in (spec.methods[method].predictions or [])


__all__ = ["ALIGNER", "IDENTITY", "AlignmentEntry", "AlignmentTable", "alignment_entry", "alignment_table",
           "mean_std", "tabulates_aligned_copy"]
