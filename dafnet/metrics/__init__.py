"""Evaluation metrics (registry kind ``metric``) and the Dice functions methods share."""

from dafnet.metrics.dice import (
    DiceMetric,
    class_overlaps_per_slice,
    dice_3d_per_volume,
    mean_per_volume,
    paper_dice_per_slice,
    summarise_percent,
)

__all__ = [
    "DiceMetric",
    "class_overlaps_per_slice",
    "dice_3d_per_volume",
    "mean_per_volume",
    "paper_dice_per_slice",
    "summarise_percent",
]
