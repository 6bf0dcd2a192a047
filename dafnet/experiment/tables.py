"""The paper's tables from an experiment's cells, as markdown and CSV.

Each entry is the paper Dice (percent) of the test volumes of every fold of that setting,
pooled: mean and population std over volumes. With several seeds, a volume's Dice is first
averaged over the seeds of its setting, so every volume counts once. An asterisk marks a Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, two-sided) with p < alpha over the volumes both settings share
(same fold and subject), against:

* Tables I and II: the reference method (DAFNet) in the same column;
* Table III: the expert pairing of the same method and fraction;
* Table IV: the un-ablated reference method at the same fraction.

In Tables I and II every row is also compared with ``copy`` (the method whose recipe is the
``copy`` baseline, when the spec has one): the Wilcoxon p-value against it and how many of the
shared volumes score above it (``12/15 > copy``). Every table says how many seeds each row's
entries average (``Seeds``: one number, or a range when the entries differ).

Table I: fractions 100% and 0%; Table II: the other fractions; Table III: pairing modes (only when
the spec has more than expert); Table IV: ablations (only when the spec has any). n/a: no
finished cell (e.g. a single-modality model cannot train without target labels, or a run that a
training health check failed); tables.md lists the failed cells with their reasons.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dafnet.experiment.grid import Cell
from dafnet.experiment.spec import FULL, ExperimentSpec


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
        lines += ["| " + " | ".join([label, _seeds_text(entries), *(e.text() for e in entries)]) + " |"
                  for label, entries in self.rows]
        return "\n".join(lines + ([""] + [self.note] if self.note else []))

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "column", "mean", "std", "volumes", "p_value", "significant", "seeds",
                             "p_value_vs_copy", "volumes_above_copy", "volumes_vs_copy"])
            for label, entries in self.rows:
                for column, e in zip(self.columns, entries):
                    writer.writerow([label, column, _num(e.mean), _num(e.std), len(e.values), _num(e.p_value),
                                     int(e.significant), e.seeds, _num(e.copy_p_value),
                                     "" if e.above_copy is None else e.above_copy,
                                     e.copy_volumes if e.above_copy is not None else ""])


def _seeds_text(entries: list[Entry]) -> str:
    counts = sorted({e.seeds for e in entries if e.values})
    if not counts:
        return "-"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _num(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.4f}"


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


class _Results:
    def __init__(self, cells: list[Cell], results: dict[str, dict | None]) -> None:
        self.cells, self.results = cells, results

    def kinds(self, method: str) -> set[str]:
        return {k for c in self.cells if c.method == method and self.results.get(c.id) for k in self.results[c.id]}

    def _matching(self, method: str, fraction: float | None, pairing: str, ablation: str) -> list[Cell]:
        out = []
        for c in self.cells:
            if (c.method, c.pairing, c.ablation) != (method, pairing, ablation):
                continue
            if c.fraction is not None and (fraction is None or not math.isclose(c.fraction, fraction)):
                continue
            out.append(c)
        return out

    def values(self, method: str, kind: str, fraction: float | None, pairing: str = "expert",
               ablation: str = FULL) -> dict[str, float]:
        seen: dict[str, list[float]] = {}
        for c in self._matching(method, fraction, pairing, ablation):
            per_kind = (self.results.get(c.id) or {}).get(kind, {})
            for subject, v in per_kind.items():  # one list per volume: its Dice under each seed
                seen.setdefault(f"{c.fold}:{subject}", []).append(v)
        return {volume: float(np.mean(v)) for volume, v in seen.items()}

    def entry(self, method: str, kind: str, fraction: float | None, pairing: str = "expert",
              ablation: str = FULL) -> Entry:
        """The pooled values, and how many seeds the finished cells behind them trained with."""
        seeds = {c.seed for c in self._matching(method, fraction, pairing, ablation)
                 if (self.results.get(c.id) or {}).get(kind)}
        return Entry(self.values(method, kind, fraction, pairing, ablation), seeds=len(seeds))

    def copy_method(self) -> str | None:
        """The spec's label of the ``copy`` baseline, if it has one."""
        return next((c.method for c in self.cells if c.recipe is not None and c.recipe.method.name == "copy"), None)


def row_kinds(spec: ExperimentSpec, results: _Results, method: str, pairing: str = "expert") -> list[str]:
    given = spec.methods[method].predictions
    if given:
        return list(given)
    have = results.kinds(method)
    order = ("weighted", "fused", "single") if pairing == "automated" else ("fused", "single")
    return [next((k for k in order if k in have), "single")]


def _seeds_note(spec: ExperimentSpec) -> str:
    parts = [f"trainable methods {spec.seeds}"] if spec.seeds else []
    parts += [f"{label} {m.seeds}" for label, m in spec.methods.items() if m.seeds]
    return " (each volume's Dice averaged over its seeds: " + "; ".join(parts) + ")" if parts else ""


def _pct(f: float) -> str:
    return f"{100 * f:g}%"


def _mark(entry: Entry, against: dict[str, float], alpha: float) -> Entry:
    entry.p_value = wilcoxon_p(entry.values, against)
    entry.significant = math.isfinite(entry.p_value) and entry.p_value < alpha
    return entry


def _against_copy(entry: Entry, copy: dict[str, float]) -> Entry:
    shared = sorted(set(entry.values) & set(copy))
    if entry.values and shared:
        entry.copy_p_value = wilcoxon_p(entry.values, copy)
        entry.above_copy = sum(entry.values[k] > copy[k] for k in shared)
        entry.copy_volumes = len(shared)
    return entry


def fraction_table(spec, results: _Results, reference: str, fractions: list[float], key: str, title: str) -> Table:
    copy = results.copy_method()
    against_copy = (f"; (k/n > copy, p): volumes above {copy} of those both have, and the Wilcoxon p against it"
                    if copy is not None else "")
    table = Table(key, title, [_pct(f) for f in fractions],
                  note=f"paper Dice (%) of the target, mean ± std over the test volumes of folds {spec.folds}"
                       f"{_seeds_note(spec)}; * Wilcoxon signed-rank p < {spec.alpha} against {reference}"
                       f"{against_copy}.")
    ref_kind = row_kinds(spec, results, reference)[0]
    copy_kind = row_kinds(spec, results, copy)[0] if copy is not None else None
    for method in spec.methods:
        kinds = row_kinds(spec, results, method)
        for kind in kinds:
            label = method if len(kinds) == 1 else f"{method} ({kind})"
            entries = []
            for f in fractions:
                entry = results.entry(method, kind, f)
                if not (method == reference and kind == ref_kind):
                    _mark(entry, results.values(reference, ref_kind, f), spec.alpha)
                if copy is not None and method != copy:
                    _against_copy(entry, results.values(copy, copy_kind, f))
                entries.append(entry)
            table.rows.append((label, entries))
    return table


def pairing_table(spec, results: _Results) -> Table:
    columns: list[tuple[str, str, float | None]] = []
    for method in spec.methods:
        if not any(c.method == method and c.pairing != "expert" for c in results.cells):
            continue
        trainable = any(c.trainable for c in results.cells if c.method == method)
        fractions = spec.fractions if trainable else [None]
        columns += [(method if f is None else f"{method} {_pct(f)}", method, f) for f in fractions]
    table = Table("III", "Table III: target Dice by pairing of the inputs", [c[0] for c in columns],
                  note=f"* Wilcoxon signed-rank p < {spec.alpha} against expert pairing of the same column.")
    for pairing in spec.pairings:
        entries = []
        for _, method, f in columns:
            kind = row_kinds(spec, results, method, pairing)[0]
            entry = results.entry(method, kind, f, pairing)
            if pairing != "expert":
                expert_kind = row_kinds(spec, results, method)[0]
                _mark(entry, results.values(method, expert_kind, f, "expert"), spec.alpha)
            entries.append(entry)
        table.rows.append((pairing, entries))
    return table


def ablation_table(spec, results: _Results, reference: str) -> Table:
    kind = row_kinds(spec, results, reference)[0]
    table = Table("IV", f"Table IV: ablations of {reference} (loss terms, aligner)",
                  [f"{reference} {_pct(f)}" for f in spec.fractions],
                  note=f"{kind} Dice; * Wilcoxon signed-rank p < {spec.alpha} against {FULL}.")
    for ablation in [*spec.ablations, FULL]:
        entries = []
        for f in spec.fractions:
            entry = results.entry(reference, kind, f, ablation=ablation)
            if ablation != FULL:
                _mark(entry, results.values(reference, kind, f), spec.alpha)
            entries.append(entry)
        table.rows.append((ablation, entries))
    return table


def build_tables(spec: ExperimentSpec, cells: list[Cell], reference: str,
                 results: dict[str, dict | None]) -> list[Table]:
    res = _Results(cells, results)
    full = [f for f in sorted(spec.fractions, reverse=True) if f in (0.0, 1.0)]
    partial = [f for f in sorted(spec.fractions, reverse=True) if f not in (0.0, 1.0)]
    tables = []
    if full:
        tables.append(fraction_table(spec, res, reference, full, "I",
                                     "Table I: target Dice with full (100%) or zero (0%) target annotations"))
    if partial:
        tables.append(fraction_table(spec, res, reference, partial, "II",
                                     "Table II: target Dice with partial target annotations"))
    if any(p != "expert" for p in spec.pairings):
        tables.append(pairing_table(spec, res))
    if spec.ablations:
        tables.append(ablation_table(spec, res, reference))
    return tables


def write_tables(spec: ExperimentSpec, cells: list[Cell], reference: str, results: dict[str, dict | None],
                 out: Path, failures: dict[str, str] | None = None) -> list[Table]:
    """tables.md (every table) and table_<I..IV>.csv in ``out``; ``failures``: cell id -> why it failed."""
    failures = failures or {}
    tables = build_tables(spec, cells, reference, results)
    missing = [c.id for c in cells if not results.get(c.id) and c.id not in failures]
    failed = [c.id for c in cells if not results.get(c.id) and c.id in failures]
    text = [f"# {spec.name}", ""] + ([spec.description, ""] if spec.description else [])
    for table in tables:
        text += [table.markdown(), ""]
        table.write_csv(out / f"table_{table.key}.csv")
    if failed:
        text += ["Failed cells (n/a, left out of every mean):", ""] + [f"- {c}: {failures[c]}" for c in failed] + [""]
    if missing:
        text += [f"Unfinished cells (n/a): {', '.join(missing)}", ""]
    (out / "tables.md").write_text("\n".join(text), encoding="utf-8")
    return tables


__all__ = ["Entry", "Table", "build_tables", "wilcoxon_p", "write_tables"]
