"""DAFNet's alignment error against the truth, for evaluation batches that carry coordinates.

Per other modality m: the error maps (:mod:`dafnet.metrics.alignment_error`) of the grid of
Align(s_m -> s_target) that ``predict_target`` already computed (``encoded``), over the target's
foreground pixels (truth mask > 0) of the samples whose target slice is labelled and where both
slices have coordinates (``batch["has_coordinates"]``, :mod:`dafnet.data.slices`). Batches
without ``coordinates`` give nothing.

:func:`alignment_summary` turns the per-epoch statistics into ``align_median_mm``,
``align_p95_mm``, ``identity_median_mm``, ``identity_p95_mm`` (pixels of every other modality
pooled) and, with several other modalities, the same per modality (``align_<m>_median_mm``...).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dafnet.metrics.alignment_error import error_maps, error_statistics

ALIGN_PREFIX, IDENTITY_PREFIX = "align_error_", "identity_error_"
SUMMARY_KEYS = ("align_median_mm", "align_p95_mm", "identity_median_mm", "identity_p95_mm")


def counted_pixels(method, batch: dict, m: int) -> Tensor:
    """(B, H, W) bool: the target's labelled foreground where the target and modality m have coordinates."""
    t = method.target_index
    truth = batch["masks"][:, t, 0]
    has = batch["has_coordinates"].bool()
    sample = batch["labelled"][:, t, 0].bool() & has[:, t] & has[:, m] & batch["present"][:, m].bool()
    return (truth > 0) & sample[:, None, None].to(truth.device)


def alignment_error_maps(method, batch: dict, encoded: dict) -> dict[int, tuple[Tensor, Tensor]]:
    """Other modality index -> (aligner, identity) (B, H, W) error maps in mm; {} without coordinates."""
    if "coordinates" not in batch:
        return {}
    coordinates, t = batch["coordinates"], method.target_index
    out = {}
    for m, alignment in sorted(encoded["alignment"].items()):
        out[m] = error_maps(alignment.grid, coordinates[:, m, 0], coordinates[:, t, 0],
                            counted_pixels(method, batch, m))
    return out


def alignment_statistics(method, batch: dict, encoded: dict) -> dict[str, Tensor]:
    """Per-sample error maps as evaluation statistics: ``align_error_<m>``, ``identity_error_<m>``."""
    out = {}
    for m, (aligner, identity) in alignment_error_maps(method, batch, encoded).items():
        name = method.modalities[m]
        out[f"{ALIGN_PREFIX}{name}"], out[f"{IDENTITY_PREFIX}{name}"] = aligner, identity
    return out


def alignment_summary(stats: dict[str, Tensor]) -> dict[str, float]:
    """The median / p95 columns of the module docstring; {} when the statistics have no error maps."""
    sources = sorted(k[len(ALIGN_PREFIX):] for k in stats if k.startswith(ALIGN_PREFIX))
    if not sources:
        return {}
    maps = {m: (stats[ALIGN_PREFIX + m].flatten(), stats[IDENTITY_PREFIX + m].flatten()) for m in sources}
    pooled = error_statistics(torch.cat([a for a, _ in maps.values()]), torch.cat([i for _, i in maps.values()]))
    out = {key: pooled[key] for key in SUMMARY_KEYS}
    if len(sources) > 1:
        for m, (aligner, identity) in maps.items():
            numbers = error_statistics(aligner, identity)
            for key in SUMMARY_KEYS:
                kind, rest = key.split("_", 1)
                out[f"{kind}_{m}_{rest}"] = numbers[key]
    return out


__all__ = ["alignment_error_maps", "alignment_statistics", "alignment_summary", "counted_pixels"]
