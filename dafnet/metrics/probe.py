"""Modality probe (paper Sec. V-H 1): can a logistic regression tell the modality from z?

A multinomial logistic regression (softmax, L2-penalised, fitted with torch's L-BFGS on
standardised features) predicts each sample's modality from its z (the mean of q(z | x, s)).
It is trained on the samples of some subjects and scored on the samples of the others
(``held_out`` of the subjects, seeded), so no subject is in both. The same is repeated on each
z dimension alone. With ``logvar`` the per-dimension variance of q(z) (the mean of
exp(logvar) over the samples) is reported too: a dimension the encoder does not use keeps
a variance near the prior's 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from dafnet.errors import DafnetError
from dafnet.interfaces import Metric, MetricInputs, MetricResult, Params


def fit_logistic_regression(x: Tensor, y: Tensor, num_classes: int, l2: float = 1e-4,
                            max_iter: int = 200) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(weight, bias, mean, std) of a softmax regression fitted with L-BFGS on standardised x (N, D)."""
    x = x.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    xs = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ weight + bias, y) + l2 * (weight ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach(), mean, std


def predict_logistic_regression(model, x: Tensor) -> Tensor:
    weight, bias, mean, std = model
    return (((x.double() - mean) / std) @ weight + bias).argmax(1)


def held_out_subjects(case_ids: list[str], fraction: float, seed: int) -> set[str]:
    """round(fraction * subjects) subjects (at least one, leaving at least one), seeded."""
    subjects = sorted(set(case_ids))
    if len(subjects) < 2:
        return set()
    count = min(max(1, int(math.floor(fraction * len(subjects) + 0.5))), len(subjects) - 1)
    order = np.random.default_rng(seed).permutation(len(subjects))
    return {subjects[i] for i in order[:count]}


class ModalityProbeMetric(Metric):
    """Logistic-regression modality classifier on z, overall and per dimension (registry: probe)."""

    required_inputs = ("z", "modality")

    class Params(Params):
        held_out: float = Field(0.3, gt=0, lt=1, description="fraction of subjects the classifier is scored on")
        seed: int = Field(0, description="seed of the held-out subject draw")
        l2: float = Field(1e-4, ge=0, description="L2 penalty on the weights (standardised features)")
        max_iter: int = Field(200, ge=1, description="L-BFGS iterations")

    def reset(self) -> None:
        self._z: list[Tensor] = []
        self._logvar: list[Tensor] = []
        self._modality: list[str] = []
        self._cases: list[str] = []

    def update(self, inputs: MetricInputs) -> None:
        if inputs.z is None or inputs.modality is None:
            raise DafnetError("probe metric: needs MetricInputs.z and .modality")
        if len(inputs.modality) != inputs.z.shape[0] or len(inputs.case_ids) != inputs.z.shape[0]:
            raise DafnetError(f"probe metric: {inputs.z.shape[0]} z vectors, {len(inputs.modality)} modality "
                              f"names and {len(inputs.case_ids)} case ids")
        self._z.append(inputs.z.detach().flatten(1).double().cpu())
        if inputs.logvar is not None:
            self._logvar.append(inputs.logvar.detach().flatten(1).double().cpu())
        self._modality.extend(inputs.modality)
        self._cases.extend(str(c) for c in inputs.case_ids)

    def compute(self) -> MetricResult:
        if not self._z:
            return MetricResult(summary={})
        z = torch.cat(self._z)
        summary: dict[str, float] = {"probe_samples": float(z.shape[0])}
        if self._logvar and sum(v.shape[0] for v in self._logvar) == z.shape[0]:
            variance = torch.cat(self._logvar).exp().mean(0)
            for d, v in enumerate(variance.tolist(), start=1):
                summary[f"z_variance_dim{d}"] = v
        names = sorted(set(self._modality))
        labels = torch.tensor([names.index(m) for m in self._modality])
        held = held_out_subjects(self._cases, self.params.held_out, self.params.seed)
        test = torch.tensor([c in held for c in self._cases])
        summary["probe_test_subjects"] = float(len(held))
        summary["probe_test_samples"] = float(test.sum())
        if len(names) < 2 or not held or labels[~test].unique().numel() < 2:
            summary["probe_accuracy"] = float("nan")  # one modality, one subject or one class in training
            return MetricResult(summary=summary)
        counts = torch.bincount(labels[test], minlength=len(names)).double()
        summary["probe_chance"] = float(100 * counts.max() / counts.sum())

        def accuracy(columns) -> float:
            model = fit_logistic_regression(z[~test][:, columns], labels[~test], len(names),
                                            self.params.l2, self.params.max_iter)
            return float(100 * (predict_logistic_regression(model, z[test][:, columns]) == labels[test])
                         .double().mean())

        summary["probe_accuracy"] = accuracy(slice(None))
        for d in range(z.shape[1]):
            summary[f"probe_accuracy_dim{d + 1}"] = accuracy([d])
        return MetricResult(summary=summary)


__all__ = ["ModalityProbeMetric", "fit_logistic_regression", "held_out_subjects",
           "predict_logistic_regression"]
