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
the spec has more than expert); Table IV: ablations (only when the spec has any); the alignment
table (only when a method tabulates ``aligned_copy``; :mod:`dafnet.experiment.alignment_table`).
A method whose ``predictions`` list ``aligned_copy`` gets the row ``<method> (aligned copy)`` in
Tables I and II (the first other modality's truth moved by its learned aligner), tested like any
prediction. n/a: no finished cell (e.g. a single-modality model cannot train without target labels,
or a run that a training health check failed); tables.md lists the failed cells with their
reasons, and the finished cells whose per_volume.json predates the aligned copy.
"""

from __future__ import annotations

import math
from pathlib import Path

from dafnet.experiment.alignment_table import alignment_table, tabulates_aligned_copy
from dafnet.experiment.grid import Cell
from dafnet.experiment.pooling import PooledResults, wilcoxon_p
from dafnet.experiment.references import REFERENCE
from dafnet.experiment.spec import FULL, ExperimentSpec
from dafnet.experiment.table_format import Entry, Table, fewer_folds_note

KIND_LABELS = {REFERENCE: "aligned copy"}
"""Row labels of prediction types that are not one word."""


def pooled_entry(results: PooledResults, method: str, kind: str, fraction: float | None, pairing: str = "expert",
                 ablation: str = FULL) -> Entry:
    """The pooled values, and how many seeds the finished cells behind them trained with."""
    return Entry(results.values(method, kind, fraction, pairing, ablation),
                 seeds=results.seeds(method, kind, fraction, pairing, ablation))


def row_label(method: str, kind: str, kinds: list[str]) -> str:
    """A table row's label: the method, with the prediction type when it tabulates several."""
    return method if len(kinds) == 1 else f"{method} ({KIND_LABELS.get(kind, kind)})"


def row_kinds(spec: ExperimentSpec, results: PooledResults, method: str, pairing: str = "expert") -> list[str]:
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


def _aligned_copy_note(spec: ExperimentSpec) -> str:
    if not any(tabulates_aligned_copy(spec, m) for m in spec.methods):
        return ""
    return ("; aligned copy: the first other modality's ground truth moved onto the target by the method's "
            "learned aligner (the alignment alone, whatever the segmentor does)")


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


def fraction_table(spec, results: PooledResults, reference: str, fractions: list[float], key: str, title: str,
                   part: str = "test") -> Table:
    copy = results.copy_method()
    against_copy = (f"; (k/n > copy, p): volumes above {copy} of those both have, and the Wilcoxon p against it"
                    if copy is not None else "")
    table = Table(key, title, [_pct(f) for f in fractions],
                  note=f"paper Dice (%) of the target, mean ± std over the {part} volumes of folds {spec.folds}"
                       f"{fewer_folds_note(spec)}{_seeds_note(spec)}; * Wilcoxon signed-rank p < {spec.alpha} "
                       f"against {reference}"
                       f"{against_copy}{_aligned_copy_note(spec)}.")
    ref_kind = row_kinds(spec, results, reference)[0]
    copy_kind = row_kinds(spec, results, copy)[0] if copy is not None else None
    for method in spec.methods:
        kinds = row_kinds(spec, results, method)
        for kind in kinds:
            label = row_label(method, kind, kinds)
            entries = []
            for f in fractions:
                entry = pooled_entry(results, method, kind, f)
                if not (method == reference and kind == ref_kind):
                    _mark(entry, results.values(reference, ref_kind, f), spec.alpha)
                if copy is not None and method != copy:
                    _against_copy(entry, results.values(copy, copy_kind, f))
                entries.append(entry)
            table.rows.append((label, entries))
    return table


def pairing_table(spec, results: PooledResults) -> Table:
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
            entry = pooled_entry(results, method, kind, f, pairing)
            if pairing != "expert":
                expert_kind = row_kinds(spec, results, method)[0]
                _mark(entry, results.values(method, expert_kind, f, "expert"), spec.alpha)
            entries.append(entry)
        table.rows.append((pairing, entries))
    return table


def ablation_table(spec, results: PooledResults, reference: str) -> Table:
    kind = row_kinds(spec, results, reference)[0]
    table = Table("IV", f"Table IV: ablations of {reference} (loss terms, aligner)",
                  [f"{reference} {_pct(f)}" for f in spec.fractions],
                  note=f"{kind} Dice; * Wilcoxon signed-rank p < {spec.alpha} against {FULL}.")
    for ablation in [*spec.ablations, FULL]:
        entries = []
        for f in spec.fractions:
            entry = pooled_entry(results, reference, kind, f, ablation=ablation)
            if ablation != FULL:
                _mark(entry, results.values(reference, kind, f), spec.alpha)
            entries.append(entry)
        table.rows.append((ablation, entries))
    return table


def build_tables(spec: ExperimentSpec, cells: list[Cell], reference: str, results: dict[str, dict | None],
                 alignment: dict[str, dict | None] | None = None, part: str = "test") -> list[Table]:
    """The tables of the module docstring. ``results``: cell id -> prediction type -> subject -> Dice
    (None: unfinished); ``alignment``: cell id -> alignment column -> subject -> number; ``part``: the
    split the volumes come from (``test``, or ``validation`` to choose configurations), named in the notes."""
    res = PooledResults(cells, results, alignment)
    full = [f for f in sorted(spec.fractions, reverse=True) if f in (0.0, 1.0)]
    partial = [f for f in sorted(spec.fractions, reverse=True) if f not in (0.0, 1.0)]
    tables = []
    if full:
        tables.append(fraction_table(spec, res, reference, full, "I",
                                     "Table I: target Dice with full (100%) or zero (0%) target annotations", part))
    if partial:
        tables.append(fraction_table(spec, res, reference, partial, "II",
                                     "Table II: target Dice with partial target annotations", part))
    if any(p != "expert" for p in spec.pairings):
        tables.append(pairing_table(spec, res))
    if spec.ablations:
        tables.append(ablation_table(spec, res, reference))
    aligned = [m for m in spec.methods if tabulates_aligned_copy(spec, m)]
    if aligned:
        columns = [(_pct(f), f) for f in full + partial]
        tables.append(alignment_table(spec, res, aligned, columns, part))
    return tables


def without_references(spec: ExperimentSpec, cells: list[Cell], results: dict[str, dict | None]) -> list[str]:
    """Finished cells of methods that tabulate ``aligned_copy`` whose per_volume.json lacks it."""
    return [c.id for c in cells if results.get(c.id) and tabulates_aligned_copy(spec, c.method)
            and REFERENCE not in results[c.id]]


def write_tables(spec: ExperimentSpec, cells: list[Cell], reference: str, results: dict[str, dict | None],
                 out: Path, failures: dict[str, str] | None = None,
                 alignment: dict[str, dict | None] | None = None, part: str = "test",
                 declines: dict[str, str] | None = None) -> list[Table]:
    """tables.md (every table) and table_<key>.csv in ``out`` (with ``part`` validation:
    tables_validation.md and table_<key>_validation.csv); ``failures``: cell id -> why it failed;
    ``declines``: cell id -> its late decline (listed, still counted); ``results``, ``alignment`` and
    ``part``: as :func:`build_tables`."""
    failures = failures or {}
    suffix = "" if part == "test" else f"_{part}"
    tables = build_tables(spec, cells, reference, results, alignment, part)
    missing = [c.id for c in cells if not results.get(c.id) and c.id not in failures]
    failed = [c.id for c in cells if not results.get(c.id) and c.id in failures]
    title = f"# {spec.name}" + ("" if part == "test" else f" ({part} splits)")
    text = [title, ""] + ([spec.description, ""] if spec.description else [])
    for table in tables:
        text += [table.markdown(), ""]
        table.write_csv(out / f"table_{table.key}{suffix}.csv")
    if failed:
        text += ["Failed cells (n/a, left out of every mean):", ""] + [f"- {c}: {failures[c]}" for c in failed] + [""]
    if declines:
        text += ["Cells whose validation declined late (counted; their export is the final weights, not the best "
                 "validated ones: train.export_weights, docs/engine.md):", ""]
        text += [f"- {c}: {line}" for c, line in declines.items()] + [""]
    if missing:
        text += [f"Unfinished cells (n/a): {', '.join(missing)}", ""]
    old = without_references(spec, cells, results)
    if old:
        text += [f"Cells evaluated before the aligned copy was recorded (n/a in its rows; `dafnet experiment` adds it "
                 f"without training): {', '.join(old)}", ""]
    (out / f"tables{suffix}.md").write_text("\n".join(text), encoding="utf-8")
    return tables


__all__ = ["Entry", "Table", "build_tables", "row_kinds", "row_label", "wilcoxon_p", "without_references",
           "write_tables"]
