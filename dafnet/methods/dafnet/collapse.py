"""Label-free signals of a collapsing DAFNet run, from what ``predict_target`` computed (``encoded``).

A DAFNet run can collapse where no label shows it: every anatomy of a modality emptied (no channel
above 0.5) and the aligner warping the other anatomy out of the frame to match it. Per sample:

* ``anatomy_coverage_<m>``: the fraction of the slice's pixels where s_m has an active channel;
* ``align_displacement_<m>``: the mean length of Align(s_m -> s_target)'s displacement over the
  slice, as a fraction of the slice's side (per axis, so non-square slices compare);
* ``align_kept_<m>``: the share of s_m's mass that Align(s_m -> s_target) keeps in the frame
  (sum of the warped anatomy / sum of s_m; about 1 for a plausible warp, near 0 for one that
  pushes the anatomy out of the frame; 1 for an empty s_m);

NaN where modality m is absent. :func:`collapse_summary` gives their means, ``anatomy_coverage_min``
(the lowest modality's), ``align_displacement`` and ``align_kept`` (pooled over the other
modalities), which :func:`collapse_bounds` bounds for the engine's health checks
(``method.params.health_*``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dafnet.components.aligners.thin_plate import displacement_from_identity
from dafnet.interfaces import HealthBound

COVERAGE, DISPLACEMENT, KEPT = "anatomy_coverage_", "align_displacement_", "align_kept_"


def _nan_where_absent(values: Tensor, present: Tensor | None) -> Tensor:
    if present is None:
        return values
    return torch.where(present.to(values.device).bool(), values, torch.full_like(values, float("nan")))


def displacement_fraction(grid: Tensor) -> Tensor:
    """(B, H, W, 2) sampling grid (``align_corners=True``) -> (B,) mean displacement / slice side."""
    return displacement_from_identity(grid).norm(dim=-1).flatten(1).mean(1)


def collapse_statistics(method, batch: dict, encoded: dict) -> dict[str, Tensor]:
    """The per-sample statistics of the module docstring."""
    present = batch.get("present")
    out = {}
    for m, anatomy in sorted(encoded["anatomy"].items()):
        here = present[:, m] if present is not None else None
        coverage = anatomy.float().sum(1).clamp(max=1).flatten(1).mean(1)
        out[f"{COVERAGE}{method.modalities[m]}"] = _nan_where_absent(coverage, here)
    for m, alignment in sorted(encoded["alignment"].items()):
        here = present[:, m] if present is not None else None
        out[f"{DISPLACEMENT}{method.modalities[m]}"] = _nan_where_absent(
            displacement_fraction(alignment.grid.float()), here)
        mass = encoded["anatomy"][m].float().flatten(1).sum(1)
        kept = alignment.warped.float().flatten(1).sum(1) / mass.clamp_min(1e-6)
        # An empty anatomy loses nothing (1): the coverage bound is the one that sees it.
        kept = torch.where(mass > 0, kept, torch.ones_like(kept))
        out[f"{KEPT}{method.modalities[m]}"] = _nan_where_absent(kept, here)
    return out


def _mean(values: Tensor) -> float:
    return float(values.nanmean()) if torch.isfinite(values).any() else float("nan")


def collapse_summary(stats: dict[str, Tensor]) -> dict[str, float]:
    """Means of the per-sample statistics, ``anatomy_coverage_min`` and ``align_displacement``."""
    out = {k: _mean(v) for k, v in stats.items() if k.startswith((COVERAGE, DISPLACEMENT, KEPT))}
    coverages = [v for k, v in out.items() if k.startswith(COVERAGE)]
    if coverages:
        out[f"{COVERAGE}min"] = min(coverages)
    for prefix in (DISPLACEMENT, KEPT):
        values = [stats[k].flatten() for k in stats if k.startswith(prefix)]
        if values:
            out[prefix[:-1]] = _mean(torch.cat(values))
    return out


def collapse_bounds(params) -> tuple[HealthBound, ...]:
    """The health bounds of ``params.health_min_anatomy_coverage``, ``health_min_anatomy_kept`` and
    ``health_max_displacement`` (0: off)."""
    out = []
    if params.health_min_anatomy_coverage > 0:
        out.append(HealthBound(f"{COVERAGE}min", lower=params.health_min_anatomy_coverage,
                               meaning="the share of pixels the emptiest modality's anatomy covers"))
    if params.health_min_anatomy_kept > 0:
        out.append(HealthBound("align_kept", lower=params.health_min_anatomy_kept,
                               meaning="the share of the other modality's anatomy the aligner keeps in the frame"))
    if params.health_max_displacement > 0:
        out.append(HealthBound("align_displacement", upper=params.health_max_displacement,
                               meaning="the aligner's mean displacement as a fraction of the slice's side"))
    return tuple(out)


__all__ = ["collapse_bounds", "collapse_statistics", "collapse_summary", "displacement_fraction"]
