"""DAFNet's side of ``dafnet evaluate``: one evaluation batch -> the MetricInputs every metric reads.

For a batch of :class:`~dafnet.data.slices.PairedSliceDataset` samples it returns

* one ``MetricInputs`` per prediction type of the target (``single``, ``deformed``, ``fused``,
  ``weighted`` with k > 1, and ``deformed_<m>`` per other modality when there are several):
  ``prediction`` (class probabilities), ``target`` (the target masks), ``image`` (the target
  images), only for the samples whose target slice has ground truth;
* one ``MetricInputs`` per modality with ``prediction_type = "factors"``: ``image``, its
  ``anatomy`` s, ``z`` (the mean of q(z | x, s)) and ``logvar``, for the samples that have the
  modality (anchors only: candidate 0).

``modality`` names the modality of each sample; ``slice_index`` is the sample's target slice.
The evaluation driver may add ``case_ids`` (subject ids), ``spacing`` (row, col mm) and
``slice_spacing`` (mm) to the batch; without them the case ids are the dataset's subject indices.
"""

from __future__ import annotations

import torch

from dafnet.interfaces import MetricInputs
from dafnet.methods.dafnet_inference import predict_target


def evaluation_inputs(method, batch: dict) -> list[MetricInputs]:
    images, t = batch["images"], method.target_index
    n = images.shape[1]
    names = method.modalities
    anchors = {m: images[:, m, 0] for m in range(n)}
    present = {m: batch["present"][:, m].bool() for m in range(n)}
    candidates = {m: images[:, m] for m in range(n) if m != t} if method.num_candidates > 1 else None
    predictions = predict_target(method, t, anchors, present, candidates)
    if n == 2:  # deformed_<source> is deformed itself
        predictions = {k: v for k, v in predictions.items() if not k.startswith("deformed_")}
    case_ids = [str(c) for c in batch.get("case_ids", batch["subject"].tolist())]
    common = {"spacing": batch.get("spacing"), "slice_spacing": batch.get("slice_spacing")}
    slices = batch["slice"]
    out = []
    labelled = batch["labelled"][:, t, 0].bool()
    rows = labelled.nonzero().flatten().tolist()
    if rows:
        index = torch.tensor(rows, device=images.device)
        truth = batch["masks"][:, t, 0]
        for kind, probabilities in predictions.items():
            out.append(MetricInputs(
                case_ids=[case_ids[i] for i in rows], prediction_type=kind,
                prediction=probabilities[index], target=truth[index], image=anchors[t][index],
                modality=[names[t]] * len(rows), slice_index=slices[index.to(slices.device)], **common))
    for m in range(n):
        rows = present[m].nonzero().flatten().tolist()
        if not rows:
            continue
        index = torch.tensor(rows, device=images.device)
        x = anchors[m][index]
        s = method.anatomy_encoder(x, m).anatomy
        q = method.modality_encoder(x, s)
        out.append(MetricInputs(
            case_ids=[case_ids[i] for i in rows], prediction_type="factors", anatomy=s, z=q.mu,
            logvar=q.logvar, image=x, modality=[names[m]] * len(rows),
            slice_index=slices[index.to(slices.device)], **common))
    return out


__all__ = ["evaluation_inputs"]
