"""The objects of an experiment's tables and their markdown and CSV: an :class:`Entry` (the pooled
per-volume Dice of one setting, with its tests) and a :class:`Table` (labelled rows of entries,
one column per setting, e.g. an annotation fraction). Which tables and rows there are:
:mod:`dafnet.experiment.tables`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Entry:
    values: dict[str, float]
    """``fold:subject`` -> Dice (percent)."""
    p_value: float = float("nan")
    significant: bool = False
    seeds: int = 0
    """How many seeds the finished cells behind it trained with (0: none finished)."""
    copy_p_value: float = float("nan")
    """Wilcoxon p against ``copy`` over the shared volumes (NaN: no copy, or not compared)."""
    above_copy: int | None = None
    """Shared volumes whose Dice is above copy's (None: not compared)."""
    copy_volumes: int = 0
    """Volumes shared with copy."""

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(list(self.values.values()))) if self.values else float("nan")

    def text(self) -> str:
        if not self.values:
            return "n/a"
        text = f"{self.mean:.1f} ± {self.std:.1f}{'*' if self.significant else ''}"
        if self.above_copy is not None and self.copy_volumes:
            p = f", p {self.copy_p_value:.2g}" if math.isfinite(self.copy_p_value) else ""
            text += f" ({self.above_copy}/{self.copy_volumes} > copy{p})"
        return text


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Entry]]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(["Method", "Seeds", *self.columns]) + " |",
                 "|" + "---|" * (len(self.columns) + 2)]
        lines += ["| " + " | ".join([label, seeds_text(entries), *(e.text() for e in entries)]) + " |"
                  for label, entries in self.rows]
        return "\n".join(lines + ([""] + [self.note] if self.note else []))

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "column", "mean", "std", "volumes", "p_value", "significant", "seeds",
                             "p_value_vs_copy", "volumes_above_copy", "volumes_vs_copy"])
            for label, entries in self.rows:
                for column, e in zip(self.columns, entries):
                    writer.writerow([label, column, number_text(e.mean), number_text(e.std), len(e.values),
                                     number_text(e.p_value), int(e.significant), e.seeds, number_text(e.copy_p_value),
                                     "" if e.above_copy is None else e.above_copy,
                                     e.copy_volumes if e.above_copy is not None else ""])


def seeds_text(entries: list) -> str:
    """The Seeds column of a row: the seed count of its finished entries, a range when they differ, else -."""
    counts = sorted({e.seeds for e in entries if e.values})
    if not counts:
        return "-"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def number_text(x: float) -> str:
    """A CSV number: 4 decimals, empty when not finite."""
    return "" if not math.isfinite(x) else f"{x:.4f}"


def fewer_folds_note(spec) -> str:
    """A table note naming the rows of ``spec`` that run fewer folds than it (so average fewer volumes)."""
    parts = [f"{label} {spec.method_folds(label)}" for label in spec.methods
             if spec.method_folds(label) != list(spec.folds)]
    return " (rows with fewer folds, so fewer volumes: " + "; ".join(parts) + ")" if parts else ""


__all__ = ["Entry", "Table", "fewer_folds_note", "number_text", "seeds_text"]
