"""Distance correlation (Szekely et al.; paper Sec. V-H) in torch, chunked, and the ``dcor`` metric.

:func:`distance_correlation` is the usual biased V-statistic (``dcor.distance_correlation``):
distance matrices a, b of the n samples are double centred,
A_ij = a_ij - a_i. - a_.j + a_.. (means), dCov^2 = mean(A B), dCor = sqrt(dCov^2(x, y) /
sqrt(dVar^2(x) dVar^2(y))). :func:`u_distance_correlation_sqr` is the bias-corrected
estimator of dCor^2 (``dcor.u_distance_correlation_sqr``): U-centred matrices
(A_ij = a_ij - a_i./(n-2) - a_.j/(n-2) + a_../((n-1)(n-2)), zero diagonal, sums), divided by
n (n - 3). It can be negative.

Both make one pass over row chunks of the distance matrices, accumulating in float64 the row
sums and the sums of a_ij b_ij, a_ij^2 and b_ij^2, from which the centred sums follow without
forming a centred matrix: sum(A B) = sum(a b) - (2 / n) sum_i a_i. b_i. + a.. b.. / n^2 for the
double-centred matrices, sum(A B) = sum(a b) - (2 / (n - 2)) sum_i a_i. b_i. + a.. b.. / ((n - 1)
(n - 2)) for the U-centred ones (Szekely & Rizzo 2014, the Omega_n of their Proposition 1; a_i.: row
sums, a..: the total, zero diagonal). So no more than two ``chunk x n`` blocks of distances exist at
once, each computed once; the features themselves are held once in float64 on the device.
Distances use the Gram identity on column-centred features (exact zeros on the diagonal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from dafnet.errors import DafnetError
from dafnet.interfaces import Metric, MetricInputs, MetricResult, Params


@dataclass
class DistanceStats:
    """Squared (co)variances and the correlation of one estimator."""

    covariance_sqr: float
    variance_x_sqr: float
    variance_y_sqr: float
    correlation_sqr: float


def _prepare(x, device, name: str) -> Tensor:
    x = torch.as_tensor(x)
    x = x.reshape(x.shape[0], -1) if x.ndim != 1 else x.reshape(-1, 1)
    if not torch.isfinite(x).all():
        raise DafnetError(f"distance correlation: {name} holds non-finite values")
    x = x.to(device=device, dtype=torch.float64)
    return x - x.mean(dim=0, keepdim=True)  # distances are translation invariant; smaller norms, less rounding


def _distances(x: Tensor, norms: Tensor, start: int, stop: int) -> Tensor:
    """Euclidean distances of rows start:stop to rows start:n, (stop - start, n - start): the blocks
    on and right of the diagonal (the matrix is symmetric, so they are all of it)."""
    d2 = torch.addmm(norms[None, start:], x[start:stop], x[start:].T, alpha=-2.0).add_(norms[start:stop, None])
    d = d2.clamp_min_(0.0).sqrt_()
    rows = torch.arange(stop - start, device=x.device)
    d[rows, rows] = 0.0
    return d


def _check(x: Tensor, y: Tensor, chunk: int, bias_corrected: bool) -> None:
    n = x.shape[0]
    if y.shape[0] != n:
        raise DafnetError(f"distance correlation: x has {n} samples, y has {y.shape[0]}")
    if n < (4 if bias_corrected else 2):
        raise DafnetError(f"distance correlation needs at least {4 if bias_corrected else 2} samples, got {n}")
    if chunk < 1:
        raise DafnetError(f"distance correlation: chunk must be >= 1, got {chunk}")


def _block_products(da: Tensor, db: Tensor, width: int) -> Tensor:
    """sum ab, sum aa, sum bb over a row block and its mirror: the diagonal (width x width) block once,
    the rest twice, i.e. twice the whole block less its diagonal block."""
    out = torch.empty(3, dtype=torch.float64, device=da.device)
    for j, (p, q) in enumerate(((da, db), (da, da), (db, db))):
        whole = torch.dot(p.reshape(-1), q.reshape(-1))
        diagonal = torch.dot(p[:, :width].reshape(-1), q[:, :width].reshape(-1))
        out[j] = 2.0 * whole - diagonal
    return out


def _stats(x, y, *, chunk: int, device, bias_corrected: bool) -> DistanceStats:
    device = torch.device(device) if device is not None else torch.device("cpu")
    x, y = _prepare(x, device, "x"), _prepare(y, device, "y")
    _check(x, y, chunk, bias_corrected)
    n = x.shape[0]
    nx, ny = (x * x).sum(1), (y * y).sum(1)
    rows = torch.zeros(2, n, dtype=torch.float64, device=device)  # a_i., b_i.
    products = torch.zeros(3, dtype=torch.float64, device=device)  # sum ab, sum aa, sum bb
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        da, db = _distances(x, nx, start, stop), _distances(y, ny, start, stop)
        for i, d in enumerate((da, db)):
            rows[i, start:stop] += d.sum(1)
            rows[i, stop:] += d[:, stop - start:].sum(0)  # the mirrored blocks below the diagonal
        products += _block_products(da, db, stop - start)
        del da, db
    totals = rows.sum(1)
    cross = torch.stack((torch.dot(rows[0], rows[1]), torch.dot(rows[0], rows[0]), torch.dot(rows[1], rows[1])))
    outer = torch.stack((totals[0] * totals[1], totals[0] ** 2, totals[1] ** 2))
    if bias_corrected:
        sums, scale = products - 2.0 / (n - 2) * cross + outer / ((n - 1) * (n - 2)), n * (n - 3)
    else:
        sums, scale = products - 2.0 / n * cross + outer / n ** 2, n ** 2
    cov, var_x, var_y = (sums / scale).tolist()
    denominator = abs(var_x * var_y) ** 0.5
    return DistanceStats(cov, var_x, var_y, cov / denominator if denominator != 0.0 else 0.0)


def distance_stats_sqr(x, y, *, chunk: int = 256, device=None, bias_corrected: bool = False) -> DistanceStats:
    """Squared distance covariance, variances and correlation of samples x (n, ...) and y (n, ...)."""
    return _stats(x, y, chunk=chunk, device=device, bias_corrected=bias_corrected)


def distance_correlation(x, y, *, chunk: int = 256, device=None) -> float:
    """The biased (V-statistic) distance correlation, as ``dcor.distance_correlation``."""
    stats = _stats(x, y, chunk=chunk, device=device, bias_corrected=False)
    return float(max(stats.correlation_sqr, 0.0) ** 0.5)


def u_distance_correlation_sqr(x, y, *, chunk: int = 256, device=None) -> float:
    """The bias-corrected estimator of dCor^2, as ``dcor.u_distance_correlation_sqr`` (may be < 0)."""
    return float(_stats(x, y, chunk=chunk, device=device, bias_corrected=True).correlation_sqr)


def gather_features(tensors: list[Tensor]) -> list[Tensor]:
    """Every process's tensors when a multi-process accelerate state exists, else ``tensors``."""
    try:
        from accelerate.state import PartialState
        from accelerate.utils import gather_object
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return tensors
    if not PartialState._shared_state or PartialState().num_processes <= 1:
        return tensors
    return [t for t in gather_object([t.cpu() for t in tensors])]


class DistanceCorrelationMetric(Metric):
    """dCor between anatomy s and modality z (and image vs s, image vs z) over the evaluated samples
    (registry: dcor). Features are accumulated and dCor is computed once in ``compute``."""

    required_inputs = ("anatomy", "z")

    class Params(Params):
        max_samples: int | None = Field(None, ge=4, description="subsample this many samples (seeded) "
                                        "before computing; null = all")
        seed: int = Field(0, description="seed of the subsample and of the permutation test")
        permutations: int = Field(0, ge=0, description="permutations of dcor's independence test for a "
                                  "p-value of s vs z (0 = no test; it runs in numpy on all n x n distances)")
        chunk: int = Field(256, ge=1, description="rows of the distance matrices computed at once")
        device: str | None = Field(None, description="torch device; null = cuda when available, else cpu")

    def reset(self) -> None:
        self._s: list[Tensor] = []
        self._z: list[Tensor] = []
        self._x: list[Tensor] = []
        self._modality: list[str] = []

    def update(self, inputs: MetricInputs) -> None:
        if inputs.anatomy is None or inputs.z is None:
            raise DafnetError("dcor metric: needs MetricInputs.anatomy and .z")
        batch = inputs.anatomy.shape[0]
        if inputs.z.shape[0] != batch:
            raise DafnetError(f"dcor metric: {batch} anatomies but {inputs.z.shape[0]} z vectors")
        self._s.append(inputs.anatomy.detach().flatten(1).float().cpu())
        self._z.append(inputs.z.detach().flatten(1).float().cpu())
        if inputs.image is not None:
            self._x.append(inputs.image.detach().flatten(1).float().cpu())
        self._modality.extend(inputs.modality or ["?"] * batch)

    def compute(self) -> MetricResult:
        s, z, x = (gather_features(v) for v in (self._s, self._z, self._x))
        if not s:
            return MetricResult(summary={})
        s, z = torch.cat(s), torch.cat(z)
        x = torch.cat(x) if x and sum(t.shape[0] for t in x) == s.shape[0] else None
        n_total = s.shape[0]
        rng = np.random.default_rng(self.params.seed)
        if self.params.max_samples is not None and n_total > self.params.max_samples:
            keep = torch.from_numpy(np.sort(rng.choice(n_total, self.params.max_samples, replace=False)))
            s, z = s[keep], z[keep]
            x = x[keep] if x is not None else None
        n = s.shape[0]
        device = self.params.device or ("cuda" if torch.cuda.is_available() else "cpu")
        kw = {"chunk": self.params.chunk, "device": device}
        summary = {"n": float(n), "n_total": float(n_total), "seed": float(self.params.seed)}
        pairs = {"s_z": (s, z)}
        if x is not None:
            pairs.update({"image_s": (x, s), "image_z": (x, z)})
        for name, (a, b) in pairs.items():
            summary[f"dcor_{name}"] = distance_correlation(a, b, **kw)
            if n >= 4:
                summary[f"dcor_u_sqr_{name}"] = u_distance_correlation_sqr(a, b, **kw)
        if self.params.permutations > 0:
            from dcor.independence import distance_covariance_test

            test = distance_covariance_test(s.double().numpy(), z.double().numpy(),
                                            num_resamples=self.params.permutations,
                                            random_state=self.params.seed)
            summary["dcor_s_z_pvalue"] = float(test.pvalue)
        return MetricResult(summary=summary)


__all__ = [
    "DistanceCorrelationMetric",
    "DistanceStats",
    "distance_correlation",
    "distance_stats_sqr",
    "gather_features",
    "u_distance_correlation_sqr",
]
