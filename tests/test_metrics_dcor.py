"""Distance correlation in torch against the dcor package, and the dcor metric."""

from __future__ import annotations

import dcor
import numpy as np
import pytest
import torch
from dcor.independence import distance_covariance_test

from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, MetricInputs
from dafnet.metrics import dcor as tdcor
from dafnet.metrics.dcor import DistanceCorrelationMetric, distance_correlation, u_distance_correlation_sqr
from dafnet.registry import registry


def samples(kind: str, n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 40))
    if kind == "independent":
        y = rng.normal(size=(n, 5))
    elif kind == "dependent":
        y = np.sin(x[:, :5]) + 0.2 * rng.normal(size=(n, 5))
    else:  # binary anatomy-like features with repeated rows (zero distances off the diagonal)
        x = (rng.random((n, 8 * 16 * 16)) > 0.7).astype(np.float64)
        x[: n // 4] = x[0]
        y = x[:, :3] @ rng.normal(size=(3, 4)) + 0.1 * rng.normal(size=(n, 4))
    return x, y


@pytest.mark.parametrize("kind", ["independent", "dependent", "binary"])
@pytest.mark.parametrize("chunk", [7, 1024])
def test_biased_dcor_equals_the_dcor_package(kind, chunk):
    x, y = samples(kind)
    assert distance_correlation(x, y, chunk=chunk) == pytest.approx(dcor.distance_correlation(x, y), abs=1e-6)


@pytest.mark.parametrize("kind", ["independent", "dependent", "binary"])
def test_bias_corrected_dcor_equals_the_dcor_package(kind):
    x, y = samples(kind)
    expected = dcor.u_distance_correlation_sqr(x, y)
    assert u_distance_correlation_sqr(x, y, chunk=13) == pytest.approx(expected, abs=1e-6)


def test_dependence_is_detected_and_degenerate_cases_are_defined():
    x, y = samples("independent", n=300)
    xd, yd = samples("dependent", n=300)
    assert distance_correlation(xd, yd) > 0.5 > distance_correlation(x, y)
    assert distance_correlation(x, 2 * x + 1) == pytest.approx(1.0, abs=1e-9)
    assert distance_correlation(x, np.ones((300, 2))) == 0.0  # as dcor: zero variance -> 0
    with pytest.raises(DafnetError):
        distance_correlation(x[:1], y[:1])
    with pytest.raises(DafnetError):
        distance_correlation(x, y[:10])
    with pytest.raises(DafnetError):
        u_distance_correlation_sqr(x[:3], y[:3])


def test_no_more_than_a_chunk_of_distance_rows_at_once(monkeypatch):
    x, y = samples("dependent", n=100)
    rows = []
    original = tdcor._distances

    def spy(features, norms, start, stop):
        out = original(features, norms, start, stop)
        rows.append(out.shape)
        return out

    monkeypatch.setattr(tdcor, "_distances", spy)
    value = distance_correlation(x, y, chunk=16)
    assert value == pytest.approx(dcor.distance_correlation(x, y), abs=1e-6)
    # one pass over row blocks of 16, each from its diagonal to the last column (the matrices are symmetric)
    assert [r[0] for r in rows[::2]] == [16] * 6 + [4] and [r[1] for r in rows[::2]] == [100 - 16 * i for i in range(7)]


def feed(metric, x, s, z, batch=16, modality="t1"):
    for i in range(0, len(z), batch):
        metric.update(MetricInputs(case_ids=[f"c{j // 10}" for j in range(i, min(i + batch, len(z)))],
                                   prediction_type="factors", anatomy=torch.as_tensor(s[i:i + batch]),
                                   z=torch.as_tensor(z[i:i + batch]), image=torch.as_tensor(x[i:i + batch]),
                                   modality=[modality] * len(z[i:i + batch])))


def test_metric_accumulates_and_computes_once_over_all_samples():
    assert registry("metric").get("dcor") is DistanceCorrelationMetric
    rng = np.random.default_rng(1)
    s = (rng.random((90, 4, 8, 8)) > 0.5).astype(np.float32)
    z = (s.reshape(90, -1)[:, :6] + 0.3 * rng.normal(size=(90, 6))).astype(np.float32)
    x = (s.sum(1, keepdims=True) + 0.1 * rng.normal(size=(90, 1, 8, 8))).astype(np.float32)
    metric = DistanceCorrelationMetric(DistanceCorrelationMetric.Params(device="cpu", permutations=50), Facts())
    feed(metric, x, s, z)
    summary = metric.compute().summary
    flat_s, flat_x = s.reshape(90, -1).astype(np.float64), x.reshape(90, -1).astype(np.float64)
    z64 = z.astype(np.float64)
    assert summary["n"] == 90
    assert summary["dcor_s_z"] == pytest.approx(dcor.distance_correlation(flat_s, z64), abs=1e-6)
    assert summary["dcor_u_sqr_s_z"] == pytest.approx(dcor.u_distance_correlation_sqr(flat_s, z64), abs=1e-6)
    assert summary["dcor_image_s"] == pytest.approx(dcor.distance_correlation(flat_x, flat_s), abs=1e-6)
    assert summary["dcor_image_z"] == pytest.approx(dcor.distance_correlation(flat_x, z64), abs=1e-6)
    expected_p = distance_covariance_test(flat_s, z64, num_resamples=50, random_state=0).pvalue
    assert summary["dcor_s_z_pvalue"] == pytest.approx(expected_p)
    # not an average over batches: the per-batch values differ from the whole-set value
    per_batch = np.mean([dcor.distance_correlation(flat_s[i:i + 16], z64[i:i + 16]) for i in range(0, 90, 16)])
    assert abs(per_batch - summary["dcor_s_z"]) > 1e-3
    metric.reset()
    assert metric.compute().summary == {}


def test_metric_subsample_is_seeded_and_reported():
    rng = np.random.default_rng(2)
    s, z = rng.normal(size=(60, 2, 4, 4)), rng.normal(size=(60, 3))
    x = rng.normal(size=(60, 1, 4, 4))
    values = []
    for seed in (0, 0, 1):
        metric = DistanceCorrelationMetric(
            DistanceCorrelationMetric.Params(max_samples=20, seed=seed, device="cpu"), Facts())
        feed(metric, x, s, z)
        summary = metric.compute().summary
        assert summary["n"] == 20 and summary["n_total"] == 60 and summary["seed"] == seed
        values.append(summary["dcor_s_z"])
    assert values[0] == values[1] != values[2]


def test_metric_rejects_inputs_without_factors():
    metric = DistanceCorrelationMetric(DistanceCorrelationMetric.Params(), Facts())
    with pytest.raises(DafnetError):
        metric.update(MetricInputs(case_ids=["a"], z=torch.zeros(1, 8)))
