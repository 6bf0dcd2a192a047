"""A cell's references per test volume, as ``dafnet evaluate --metric dice --metric alignment`` gives them.

A method whose ``prediction_types`` include ``aligned_copy`` (DAFNet) reports through
``evaluation_inputs`` (the ``dafnet evaluate`` path) what its ``evaluation_step`` does not: per
other modality m, ``copy_<m>`` (m's ground truth as the target's prediction) and
``aligned_copy_<m>`` (that mask moved by the learned aligner), and, when the data carry the
truth's coordinates (the phantom's), the aligner's and the identity's error in mm
(``alignment_<m>``). The registered ``dice`` and ``alignment`` metrics are fed those inputs here,
so the numbers are the ones ``dafnet evaluate`` writes to ``per_volume.csv`` for the same subjects.
``aligned_copy`` alone names the aligned copy of the first other modality, as ``deformed`` names
the deformed prediction of the first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

REFERENCE = "aligned_copy"
"""The prediction type a method declares to say it reports the references."""
REFERENCE_PREFIXES = ("copy_", "aligned_copy_")
"""The ``dafnet evaluate`` prediction types recorded as references."""


def reports_references(method) -> bool:
    """Whether ``method`` (an instance or a class) reports the references (module docstring)."""
    return REFERENCE in tuple(getattr(method, "prediction_types", ()))


def _metrics(method) -> dict:
    """The registered dice and alignment metrics, attached to ``method``, drawing nothing."""
    from dafnet.builder import build

    metrics = {name: build("metric", name, params, method.facts, f"experiment metric {name}")
               for name, params in (("dice", {}), ("alignment", {"figure": False}))}
    for metric in metrics.values():
        metric.attach(method)
    return metrics


def _is_reference(inputs) -> bool:
    return inputs.alignment is not None or (inputs.prediction is not None
                                            and inputs.prediction_type.startswith(REFERENCE_PREFIXES))


@torch.no_grad()
def reference_volumes(method, subject_ids: list[str], batches: Iterable[dict]) -> tuple[dict, dict]:
    """(prediction type -> subject -> paper Dice in percent of the references, alignment column ->
    subject -> number, e.g. ``align_median_mm``) over the evaluation ``batches``, whose ``subject``
    indices name ``subject_ids``. Empty dicts for a method without references."""
    if not reports_references(method):
        return {}, {}
    metrics, kinds = _metrics(method), set()
    for batch in batches:
        batch = {**batch, "case_ids": [str(subject_ids[i]) for i in batch["subject"].tolist()]}
        for inputs in filter(_is_reference, method.evaluation_inputs(batch)):
            if inputs.prediction is not None:
                kinds.add(inputs.prediction_type)
            for metric in metrics.values():
                if metric.wants(inputs):
                    metric.update(inputs)
    dice = _by_column(metrics["dice"].compute().per_case, [f"dice_{k}" for k in sorted(kinds)])
    dice = {column[len("dice_"):]: volumes for column, volumes in dice.items()}
    first = _first_other(method)
    if f"{REFERENCE}_{first}" in dice:
        dice[REFERENCE] = dict(dice[f"{REFERENCE}_{first}"])
    rows = metrics["alignment"].compute().per_case
    return dice, _by_column(rows, sorted({k for row in rows for k in row} - {"case"}))


def _by_column(rows: list[dict], columns: list[str]) -> dict[str, dict[str, float]]:
    """Per-case rows -> column -> case -> value (finite values only)."""
    out: dict[str, dict[str, float]] = {}
    for column in columns:
        values = {str(row["case"]): float(row[column]) for row in rows if column in row}
        out[column] = {case: v for case, v in values.items() if math.isfinite(v)}
    return out


def _first_other(method) -> str | None:
    """The first modality (in the method's order) that is not its target."""
    modalities = tuple(method.facts.modalities or ())
    if not modalities:
        return None
    target = method.target_modality(modalities)
    return next((m for m in modalities if m != target), None)


__all__ = ["REFERENCE", "REFERENCE_PREFIXES", "reference_volumes", "reports_references"]
