"""The paper Dice and the per-class 3D Dice (method.md 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Metric, MetricInputs
from dafnet.metrics.dice import (
    DiceMetric,
    class_overlaps_per_slice,
    dice_3d_per_volume,
    mean_per_volume,
    paper_dice_per_slice,
    summarise_percent,
)
from dafnet.registry import registry


def probs_of(labels: torch.Tensor, num_channels: int = 3) -> torch.Tensor:
    return F.one_hot(labels, num_channels).permute(0, 3, 1, 2).float()


def test_paper_dice_pools_foreground_thresholds_and_scores_empty_slices_one():
    truth = torch.tensor([[[0, 1, 1, 2]], [[0, 0, 0, 0]], [[0, 0, 0, 0]]])
    probs = torch.zeros(3, 3, 1, 4)
    probs[:, 0] = 1.0
    # Slice 0: class 1 predicted at pixels 1 (0.9) and 2 (0.5: not > 0.5), class 2 at pixel 3 but as class 1.
    probs[0, :, 0, 1] = torch.tensor([0.1, 0.9, 0.0])
    probs[0, :, 0, 2] = torch.tensor([0.5, 0.5, 0.0])
    probs[0, :, 0, 3] = torch.tensor([0.2, 0.8, 0.0])
    # Slice 2: a false positive on an empty slice.
    probs[2, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    dice = paper_dice_per_slice(probs, truth)
    # Slice 0, pooled foreground: predicted {1, 3} (class 1), truth 1 at {1, 2}, 2 at {3}.
    # Pooled over channels: intersection only at (class 1, pixel 1) = 1; |P| = 2, |T| = 3.
    assert dice[0].item() == pytest.approx(2 * 1 / 5)
    assert dice[1].item() == 1.0  # empty truth and empty prediction
    assert dice[2].item() == 0.0  # empty truth, non-empty prediction


def test_volume_means_then_mean_and_std_over_volumes_in_percent():
    per_slice = [1.0, 0.5, 0.8, 0.6, 0.4]
    ids = ["a", "a", "b", "b", "b"]
    per_volume = mean_per_volume(per_slice, ids)
    assert per_volume == pytest.approx({"a": 0.75, "b": 0.6})
    mean, std = summarise_percent(per_volume)
    assert mean == pytest.approx(67.5)
    assert std == pytest.approx(7.5)  # population std of 75 and 60


def test_3d_dice_sums_counts_over_a_volume_and_skips_absent_classes():
    truth = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])
    pred = torch.tensor([[[1, 0, 0, 0]], [[1, 1, 0, 0]]])
    inter, p, t = class_overlaps_per_slice(probs_of(pred), truth)
    assert inter.shape == (2, 2)
    dice = dice_3d_per_volume(inter.numpy(), p.numpy(), t.numpy(), ["v", "v"])["v"]
    assert dice[0] == pytest.approx(2 * 2 / (3 + 3))
    assert np.isnan(dice[1])


def test_dice_metric_is_registered_and_reports_per_prediction_type():
    cls = registry("metric").get("dice")
    assert cls is DiceMetric and issubclass(cls, Metric)
    metric = DiceMetric(DiceMetric.Params(), Facts(class_names=("lv", "myo")))
    truth = torch.tensor([[[1, 2], [0, 0]], [[1, 1], [0, 0]], [[2, 2], [0, 0]]])
    metric.update(MetricInputs(case_ids=["s1", "s1", "s2"], prediction_type="fused", prediction=probs_of(truth),
                               target=truth))
    wrong = torch.zeros_like(truth)
    metric.update(MetricInputs(case_ids=["s1", "s1", "s2"], prediction_type="single", prediction=probs_of(wrong),
                               target=truth))
    result = metric.compute()
    assert result.summary["dice_fused_mean"] == pytest.approx(100.0)
    assert result.summary["dice_fused_std"] == pytest.approx(0.0)
    assert result.summary["dice_single_mean"] == pytest.approx(0.0)
    assert result.summary["dice3d_fused_lv_mean"] == pytest.approx(100.0)
    assert result.summary["dice3d_fused_myo_mean"] == pytest.approx(100.0)
    assert {row["case"] for row in result.per_case} == {"s1", "s2"}
    metric.reset()
    assert metric.compute().summary == {}


def test_dice_metric_rejects_missing_inputs():
    metric = DiceMetric(DiceMetric.Params(), Facts())
    with pytest.raises(DafnetError):
        metric.update(MetricInputs(case_ids=["a"]))
    with pytest.raises(DafnetError):
        paper_dice_per_slice(torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, 5, dtype=torch.long))
