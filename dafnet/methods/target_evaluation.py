"""The evaluation every method of a target modality shares (DAFNet, unet, sdnet, copy, register).

Per sample the paper Dice of each prediction type of the target and the per-class overlap counts
(docs/method.md, Evaluation); the summary has the keys ``dice_<type>``, ``dice_<type>_std``,
``dice3d_<type>`` and ``monitor``; the result table, the health signals, the ``MetricInputs`` of
the predictions for ``dafnet evaluate``, and eval mode without gradients.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from dafnet.interfaces import HealthSignals, MethodContext, MetricInputs, ResultTable
from dafnet.metrics.dice import (
    class_overlaps_per_slice,
    dice_3d_per_volume,
    mean_per_volume,
    paper_dice_per_slice,
    summarise_percent,
)


@contextmanager
def evaluating(module):
    """Eval mode and no_grad inside the block; the training flag is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def dice_statistics(predictions: dict[str, Tensor], batch: dict, target_index: int) -> dict[str, Tensor]:
    """Per-sample paper Dice and class overlaps of each prediction type (as DAFNet's)."""
    truth = batch["masks"][:, target_index, 0]
    stats = {"subject": batch["subject"], "labelled": batch["labelled"][:, target_index, 0]}
    for kind, probabilities in predictions.items():
        stats[f"paper_{kind}"] = paper_dice_per_slice(probabilities, truth)
        stats[f"overlap_{kind}"] = torch.stack(class_overlaps_per_slice(probabilities, truth), dim=1)
    return stats


def dice_summary(stats: dict[str, Tensor], monitor_kind: str) -> dict[str, float]:
    """dice_<type>, dice_<type>_std, dice3d_<type> (percent) and monitor = 1 - Dice of ``monitor_kind``."""
    keep = stats["labelled"].bool().cpu().numpy()
    subjects = stats["subject"].cpu().numpy()[keep]
    out: dict[str, float] = {}
    for key in sorted(k for k in stats if k.startswith("paper_")):
        kind = key[len("paper_"):]
        per_volume = mean_per_volume(stats[key].float().cpu().numpy()[keep], subjects)
        out[f"dice_{kind}"], out[f"dice_{kind}_std"] = summarise_percent(per_volume)
        overlap = stats[f"overlap_{kind}"].float().cpu().numpy()[keep]
        dice3d = dice_3d_per_volume(overlap[:, 0], overlap[:, 1], overlap[:, 2], subjects)
        if dice3d:
            table = 100 * np.stack(list(dice3d.values()))
            out[f"dice3d_{kind}"] = float(np.nanmean(table)) if np.isfinite(table).any() else float("nan")
    out["monitor"] = 1.0 - out.get(f"dice_{monitor_kind}", float("nan")) / 100.0
    return out


def target_health_signals(context: MethodContext, target: str, train_modalities,
                          supervised_losses: tuple[str, ...]) -> HealthSignals:
    """The supervised loss always; the target Dice only when target labels are among the training
    data (a model trained on another modality scores about chance on the target, as it should)."""
    sees_target = target in train_modalities and context.annotation_fraction > 0
    return HealthSignals(supervised_losses=supervised_losses, validation_dice="dice_single" if sees_target else None)


def dice_table(summary: dict[str, float], target: str, kinds: tuple[str, ...], note: str) -> ResultTable | None:
    kinds = tuple(k for k in kinds if f"dice_{k}" in summary)
    if not kinds:
        return None
    rows = [[k, f"{summary[f'dice_{k}']:.1f} ± {summary.get(f'dice_{k}_std', float('nan')):.1f}",
             f"{summary.get(f'dice3d_{k}', float('nan')):.1f}"] for k in kinds]
    return ResultTable(title=f"{target} Dice (%) per prediction type",
                       columns=["prediction", "paper Dice (mean ± std over volumes)", "3D Dice (per class, mean)"],
                       rows=rows, note=note)


def metric_inputs(predictions: dict[str, Tensor], batch: dict, target_index: int, target: str) -> list:
    """MetricInputs per prediction type for the samples whose target slice has ground truth."""
    images = batch["images"]
    labelled = batch["labelled"][:, target_index, 0].bool()
    rows = labelled.nonzero().flatten().tolist()
    if not rows:
        return []
    case_ids = [str(c) for c in batch.get("case_ids", batch["subject"].tolist())]
    index = torch.tensor(rows, device=images.device)
    slices = batch["slice"]
    truth = batch["masks"][:, target_index, 0]
    return [MetricInputs(case_ids=[case_ids[i] for i in rows], prediction_type=kind,
                         prediction=p[index], target=truth[index], image=images[:, target_index, 0][index],
                         modality=[target] * len(rows), slice_index=slices[index.to(slices.device)],
                         spacing=batch.get("spacing"), slice_spacing=batch.get("slice_spacing"))
            for kind, p in predictions.items()]


__all__ = ["dice_statistics", "dice_summary", "dice_table", "evaluating", "target_health_signals", "metric_inputs"]
