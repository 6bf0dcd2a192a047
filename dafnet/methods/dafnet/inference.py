"""DAFNet's target predictions (method.md 5) and their evaluation statistics.

Prediction types of the target t: ``single`` Seg(s_t); ``deformed_<m>`` Seg(Align(s_m -> s_t))
per other modality m and ``deformed`` = that of the first other modality (recipe order);
``fused`` Seg(Fuse(s_t, Align(s_m -> s_t) for every other m)); with k > 1 candidates
``weighted`` = sum_l w_l Seg(Fuse(s_t, Align(s_m^l -> s_t) for every m)), w the pairing
weights averaged over the other modalities. A modality missing for a sample is left out
(its deformed prediction falls back to single; it enters the fusion as s_t itself).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dafnet.components.aligners.thin_plate import sample
from dafnet.errors import DafnetError
from dafnet.losses import one_hot_target
from dafnet.methods.dafnet.alignment import alignment_statistics
from dafnet.methods.dafnet.collapse import collapse_statistics
from dafnet.methods.dafnet.graph import flat, rows
from dafnet.methods.target_evaluation import dice_statistics


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


def predict_images(method, images: dict[str, Tensor], target: str) -> dict[str, Tensor]:
    """``DAFNet.predict``: images by modality name (a target and any others; (B, 1, H, W), (B, H, W),
    or (B, k, 1, H, W) candidates of another modality) -> class probabilities per prediction type."""
    unknown = [m for m in list(images) + [target] if m not in method.modalities]
    if unknown:
        raise DafnetError(f"unknown modalities {unknown}", hint=f"this model knows {method.modalities}")
    if target not in images:
        raise DafnetError(f"predict: the target {target!r} image is missing")
    anchors, candidates = {}, {}
    for name, x in images.items():
        m = method.modalities.index(name)
        x = x.unsqueeze(1) if x.ndim == 3 else x
        if x.ndim == 5:
            if x.shape[1] != method.num_candidates:
                raise DafnetError(f"predict: {name!r} has {x.shape[1]} candidates, the model uses "
                                  f"{method.num_candidates}")
            candidates[m], x = x, x[:, 0]
        anchors[m] = x
    t = method.modalities.index(target)
    return predict_target(method, t, anchors, None, candidates if len(candidates) else None)


def predict_target(method, target: int, anchors: dict[int, Tensor], present: dict[int, Tensor] | None = None,
                   candidates: dict[int, Tensor] | None = None,
                   encoded: dict[str, dict[int, object]] | None = None) -> dict[str, Tensor]:
    """Class probabilities (B, L + 1, H, W) per prediction type.

    ``anchors``: modality index -> (B, 1, H, W) images (the target's and the paired slices);
    ``present``: modality index -> (B,) bool (default all true); ``candidates``: other
    modality index -> (B, k, 1, H, W) candidates (nearest first) for the ``weighted`` type.
    ``encoded``, if given, receives what was computed on the way, for callers that need it
    too (evaluation): ``"anatomy"``: modality index -> s of its anchors; ``"alignment"``:
    other modality index -> the AlignmentOutput of Align(s_m -> s_target).
    """
    names = method.modalities
    encoded = {} if encoded is None else encoded
    anatomy, alignment = encoded.setdefault("anatomy", {}), encoded.setdefault("alignment", {})
    s_t = anatomy[target] = method.anatomy_encoder(anchors[target], target).anatomy
    single = method.segmentor(s_t).probabilities
    out = {"single": single}
    ones = torch.ones(s_t.shape[0], dtype=torch.bool, device=s_t.device)
    warped = []
    for m in sorted(anchors):
        if m == target:
            continue
        here = present.get(m, ones) if present is not None else ones
        s_m = anatomy[m] = method.anatomy_encoder(anchors[m], m).anatomy
        alignment[m] = method.aligner(s_m, s_t)
        w = alignment[m].warped
        warped.append(_where(here, w, s_t))
        deformed = _where(here, method.segmentor(w).probabilities, single)
        out[f"deformed_{names[m]}"] = deformed
        out.setdefault("deformed", deformed)
    out.setdefault("deformed", single)
    out["fused"] = method.segmentor(method.fuser([s_t] + warped)).probabilities
    if candidates and method.num_candidates > 1:
        out["weighted"] = _weighted(method, target, s_t, candidates, present, ones)
    return out


def _weighted(method, target, s_t, candidates, present, ones) -> Tensor:
    k, batch = method.num_candidates, s_t.shape[0]
    fixed = s_t.unsqueeze(1).expand(-1, k, -1, -1, -1)
    warped_rows = []
    weights = s_t.new_zeros(batch, k)
    counts = s_t.new_zeros(batch, 1)
    for m, cands in sorted(candidates.items()):
        if m == target:
            continue
        here = present.get(m, ones) if present is not None else ones
        s = method.anatomy_encoder(flat(cands), m).anatomy
        w = _where(here, rows(method.aligner(s, flat(fixed)).warped, k), fixed)
        warped_rows.append(w)
        weights = weights + here[:, None] * method.pairing_head(s_t, w).weights
        counts = counts + here[:, None]
    # Samples without any other modality: every candidate fuses to s_t, any weights summing to 1 do.
    weights = torch.where(counts > 0, weights / counts.clamp_min(1), torch.full_like(weights, 1.0 / k))
    result = 0
    for c in range(k):
        fused = method.fuser([s_t] + [w[:, c] for w in warped_rows])
        result = result + weights[:, c, None, None, None] * method.segmentor(fused).probabilities
    return result


def copy_predictions(masks: Tensor, grid: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Another modality's label maps (B, H, W) as one-hot target predictions (B, L + 1, H, W): as they are
    (the ``copy`` baseline) and moved by the aligner's sampling ``grid`` of Align(s_m -> s_target), bilinear
    (the aligned copy: the alignment alone, whatever the segmentor does)."""
    source = one_hot_target(masks, num_classes + 1).to(grid.dtype)
    return source, sample(source, grid)


def _references(method, batch: dict, present: dict, encoded: dict) -> dict[str, Tensor]:
    """``copy`` and ``aligned_copy`` of the first other modality m (as ``deformed``), by the ``copy``
    baseline's convention: counted on every slice with target labels, background where m's slice is
    missing or unlabelled, so ``copy`` scores what the baseline scores."""
    m = min(encoded["alignment"])
    masks = batch["masks"][:, m, 0]
    has_source = batch["labelled"][:, m, 0].bool() & present[m].bool().to(masks.device)
    masks = torch.where(has_source.view(-1, 1, 1), masks, torch.zeros_like(masks))
    copy, aligned = copy_predictions(masks, encoded["alignment"][m].grid, method.num_classes)
    return {"copy": copy, "aligned_copy": aligned}


def evaluation_statistics(method, batch: dict) -> dict[str, Tensor]:
    """Per-sample statistics of the target predictions and of the references ``copy`` and ``aligned_copy``
    (:func:`copy_predictions`): paper Dice per slice and class overlaps;
    with coordinates in the batch, the alignment error maps (:mod:`dafnet.methods.dafnet.alignment`);
    the label-free collapse signals (:mod:`dafnet.methods.dafnet.collapse`)."""
    images, t = batch["images"], method.target_index
    n = images.shape[1]
    anchors = {m: images[:, m, 0] for m in range(n)}
    present = {m: batch["present"][:, m] for m in range(n)}
    candidates = {m: images[:, m] for m in range(n) if m != t} if method.num_candidates > 1 else None
    encoded = {}
    predictions = predict_target(method, t, anchors, present, candidates, encoded)
    stats = dice_statistics({**predictions, **_references(method, batch, present, encoded)}, batch, t)
    stats.update(alignment_statistics(method, batch, encoded))
    stats.update(collapse_statistics(method, batch, encoded))
    return stats
