"""DAFNet's side of ``dafnet evaluate``: one evaluation batch -> the MetricInputs every metric reads.

For a batch of :class:`~dafnet.data.slices.PairedSliceDataset` samples it returns

* one ``MetricInputs`` per prediction type of the target (``single``, ``deformed``, ``fused``,
  ``weighted`` with k > 1, and ``deformed_<m>`` per other modality when there are several):
  ``prediction`` (class probabilities), ``target`` (the target masks), ``image`` (the target
  images), only for the samples whose target slice has ground truth;
* per other modality m, two references that read m's ground truth (for the samples where both
  slices have it): ``copy_<m>``, m's mask as the target's prediction (the ``copy`` baseline),
  and ``aligned_copy_<m>``, m's mask moved by the learned aligner (the sampling grid of
  Align(s_m -> s_target), bilinear). Their difference measures the alignment alone, whatever
  the segmentor does (paper Fig. 7 in numbers);
* per other modality m, when the batch carries the truth's ``coordinates`` (the phantom's),
  ``alignment_<m>``: ``alignment`` (:class:`~dafnet.interfaces.AlignmentErrors`: the aligner's and
  the identity's error in mm per target pixel, from the same grid as ``aligned_copy_<m>``;
  :mod:`dafnet.methods.dafnet.alignment`), ``target``, ``image``, for the samples with counted
  pixels (labelled target foreground, both slices with coordinates); no ``prediction``;
* one ``MetricInputs`` per modality with ``prediction_type = "factors"``: ``image``, its
  ``anatomy`` s, ``z`` (the mean of q(z | x, s)) and ``logvar``, for the samples that have the
  modality (anchors only: candidate 0).

``modality`` names the modality of each sample; ``slice_index`` is the sample's target slice.
The evaluation driver may add ``case_ids`` (subject ids), ``spacing`` (row, col mm) and
``slice_spacing`` (mm) to the batch; without them the case ids are the dataset's subject indices.
"""

from __future__ import annotations

import torch

from dafnet.interfaces import AlignmentErrors, MetricInputs
from dafnet.methods.dafnet.alignment import alignment_error_maps
from dafnet.methods.dafnet.inference import copy_predictions, predict_target
from dafnet.methods.target_evaluation import metric_inputs


def evaluation_inputs(method, batch: dict) -> list[MetricInputs]:
    images, t = batch["images"], method.target_index
    n = images.shape[1]
    names = method.modalities
    anchors = {m: images[:, m, 0] for m in range(n)}
    present = {m: batch["present"][:, m].bool() for m in range(n)}
    candidates = {m: images[:, m] for m in range(n) if m != t} if method.num_candidates > 1 else None
    encoded = {}
    predictions = predict_target(method, t, anchors, present, candidates, encoded)
    if n == 2:  # deformed_<source> is deformed itself
        predictions = {k: v for k, v in predictions.items() if not k.startswith("deformed_")}
    case_ids = [str(c) for c in batch.get("case_ids", batch["subject"].tolist())]
    common = {"spacing": batch.get("spacing"), "slice_spacing": batch.get("slice_spacing")}
    slices = batch["slice"]
    out = metric_inputs(predictions, batch, t, names[t])
    out += _copies(method, batch, anchors, present, encoded, case_ids, slices, common)
    out += _alignment(method, batch, anchors, encoded, case_ids, slices, common)
    for m in range(n):
        rows = present[m].nonzero().flatten().tolist()
        if not rows:
            continue
        index = torch.tensor(rows, device=images.device)
        x, s = anchors[m][index], encoded["anatomy"][m][index]
        q = method.modality_encoder(x, s)
        out.append(MetricInputs(
            case_ids=[case_ids[i] for i in rows], prediction_type="factors", anatomy=s, z=q.mu,
            logvar=q.logvar, image=x, modality=[names[m]] * len(rows),
            slice_index=slices[index.to(slices.device)], **common))
    return out


def _copies(method, batch, anchors, present, encoded, case_ids, slices, common) -> list[MetricInputs]:
    """``copy_<m>`` and ``aligned_copy_<m>`` for every other modality m (module docstring);
    the sampling grids are those ``predict_target`` computed (``encoded``)."""
    t, names, masks = method.target_index, method.modalities, batch["masks"]
    labelled = batch["labelled"][:, :, 0].bool()
    out = []
    for m in range(len(names)):
        if m == t:
            continue
        rows = (labelled[:, t] & labelled[:, m] & present[m].to(labelled.device)).nonzero().flatten().tolist()
        if not rows:
            continue
        index = torch.tensor(rows, device=anchors[t].device)
        source, aligned = copy_predictions(masks[:, m, 0][index], encoded["alignment"][m].grid[index],
                                           method.num_classes)
        for kind, prediction in ((f"copy_{names[m]}", source), (f"aligned_copy_{names[m]}", aligned)):
            out.append(MetricInputs(
                case_ids=[case_ids[i] for i in rows], prediction_type=kind, prediction=prediction,
                target=masks[:, t, 0][index], image=anchors[t][index], modality=[names[t]] * len(rows),
                slice_index=slices[index.to(slices.device)], **common))
    return out


def _alignment(method, batch, anchors, encoded, case_ids, slices, common) -> list[MetricInputs]:
    """``alignment_<m>`` per other modality m, for the samples with counted pixels (module docstring)."""
    t, names = method.target_index, method.modalities
    out = []
    for m, (aligner, identity) in alignment_error_maps(method, batch, encoded).items():
        rows = identity.flatten(1).isfinite().any(dim=1).nonzero().flatten().tolist()
        if not rows:
            continue
        index = torch.tensor(rows, device=anchors[t].device)
        source_labelled = batch["labelled"][:, m, 0].bool()[index]
        errors = AlignmentErrors(
            source=names[m], aligner_mm=aligner[index], identity_mm=identity[index],
            source_mask=batch["masks"][:, m, 0][index] if bool(source_labelled.all()) else None,
            grid=encoded["alignment"][m].grid[index])
        out.append(MetricInputs(
            case_ids=[case_ids[i] for i in rows], prediction_type=f"alignment_{names[m]}",
            target=batch["masks"][:, t, 0][index], image=anchors[t][index], modality=[names[t]] * len(rows),
            slice_index=slices[index.to(slices.device)], alignment=errors, **common))
    return out


__all__ = ["evaluation_inputs"]
