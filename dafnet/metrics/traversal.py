"""Latent traversal of z (paper Sec. V-H 2, Fig. 9) (registry: traversal).

For one evaluated sample (anatomy s and z of the chosen modality) each z dimension in turn
sweeps ``steps`` values in [-range, range] with the others fixed at the sample's z, and the
decoder renders Dec(s, z'). Per dimension the figure shows the images, the per-pixel Pearson
correlation between the swept value and the pixel intensity (0 where a pixel does not
change) and the difference image Dec(z_d = +range) - Dec(z_d = -range).

The metric needs the method's decoder: the evaluation driver calls :meth:`attach` with the
method before the first ``update`` (any method with a ``decoder(anatomy, z)`` module works)
and sets ``output_dir`` for the figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from dafnet.errors import DafnetError
from dafnet.interfaces import Metric, MetricInputs, MetricResult, Params


def traverse(decoder, anatomy: Tensor, z: Tensor, values: Tensor) -> Tensor:
    """(n_z, steps, H, W) decoded images of one sample (anatomy (C, H, W), z (n_z,)) with each z dimension
    set to each of ``values`` in turn."""
    nz, steps = z.shape[0], values.shape[0]
    codes = z.expand(nz, steps, nz).clone()
    dims = torch.arange(nz, device=z.device)
    codes[dims, :, dims] = values.to(z)
    s = anatomy.unsqueeze(0).expand(nz * steps, *anatomy.shape)
    return decoder(s, codes.reshape(nz * steps, nz))[:, 0].reshape(nz, steps, *anatomy.shape[-2:])


def pixel_correlation(values: Tensor, images: Tensor) -> Tensor:
    """Per-pixel Pearson correlation between ``values`` (steps,) and ``images`` (..., steps, H, W);
    0 where the pixel is constant."""
    v = (values - values.mean()).to(images)
    x = images - images.mean(dim=-3, keepdim=True)
    cov = (x * v[:, None, None]).sum(-3)
    norm = x.pow(2).sum(-3).sqrt() * v.pow(2).sum().sqrt()
    return torch.where(norm > 1e-8, cov / norm.clamp_min(1e-12), torch.zeros_like(cov))


class LatentTraversalMetric(Metric):
    """Fig. 9: decoded images while one z dimension sweeps [-range, range]; correlation and difference."""

    required_inputs = ("anatomy", "z")

    class Params(Params):
        steps: int = Field(7, ge=3, le=21, description="values per dimension")
        range: float = Field(3.0, gt=0, description="sweep z_d over [-range, range] (the prior's +-3 sigma)")
        modality: str | None = Field(None, description="modality of the traversed sample; null = the "
                                     "method's target (else the first modality seen)")
        sample: int = Field(0, ge=0, description="which evaluated sample of that modality (in order)")

    def reset(self) -> None:
        self._picked: tuple | None = None
        self._seen = 0

    def attach(self, method) -> None:
        if not callable(getattr(method, "decoder", None)):
            raise DafnetError(f"traversal metric: method {type(method).__name__} has no decoder(anatomy, z)")
        super().attach(method)

    def update(self, inputs: MetricInputs) -> None:
        if inputs.anatomy is None or inputs.z is None:
            raise DafnetError("traversal metric: needs MetricInputs.anatomy and .z")
        if self._picked is not None:
            return
        wanted = self.params.modality or getattr(self.method, "target", None)
        modalities = inputs.modality or ["?"] * inputs.z.shape[0]
        for b, name in enumerate(modalities):
            if wanted is not None and name != wanted:
                continue
            if self._seen == self.params.sample:
                self._picked = (inputs.anatomy[b].detach(), inputs.z[b].detach(), name, inputs.case_ids[b])
                return
            self._seen += 1

    def compute(self) -> MetricResult:
        if self._picked is None:
            return MetricResult(summary={})
        method = self.method
        if method is None:
            raise DafnetError("traversal metric: no method attached", hint="call metric.attach(method) first")
        anatomy, z, modality, case = self._picked
        decoder = method.decoder
        p = next(decoder.parameters(), None)
        device = p.device if p is not None else anatomy.device
        values = torch.linspace(-self.params.range, self.params.range, self.params.steps, device=device)
        was_training = decoder.training
        decoder.eval()
        try:
            with torch.no_grad():
                images = traverse(decoder, anatomy.to(device).float(), z.to(device).float(), values).cpu()
        finally:
            decoder.train(was_training)
        correlation = pixel_correlation(values.cpu(), images)
        difference = images[:, -1] - images[:, 0]
        summary = {}
        for d in range(images.shape[0]):
            summary[f"traversal_mean_abs_difference_dim{d + 1}"] = float(difference[d].abs().mean())
            summary[f"traversal_mean_abs_correlation_dim{d + 1}"] = float(correlation[d].abs().mean())
        files = []
        out = self.output_dir
        if out is not None:
            path = Path(out) / f"traversal_{modality}.png"
            _plot(path, images.numpy(), correlation.numpy(), difference.numpy(), values.cpu().numpy(),
                  f"z traversal of {case} ({modality})")
            files.append(str(path))
        return MetricResult(summary=summary, files=files)


def _plot(path: Path, images, correlation, difference, values, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nz, steps = images.shape[:2]
    fig = Figure(figsize=(1.3 * (steps + 2), 1.3 * nz + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nz, steps + 2, squeeze=False)
    limit = float(np.abs(difference).max()) or 1.0
    for d in range(nz):
        for j in range(steps):
            axes[d, j].imshow(images[d, j], cmap="gray", vmin=-1, vmax=1)
            if d == 0:
                axes[d, j].set_title(f"{values[j]:+.1f}", fontsize=7)
        axes[d, steps].imshow(correlation[d], cmap="RdBu_r", vmin=-1, vmax=1)
        axes[d, steps + 1].imshow(difference[d], cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[d, 0].set_ylabel(f"z{d + 1}", fontsize=7)
    axes[0, steps].set_title("corr", fontsize=7)
    axes[0, steps + 1].set_title("diff", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")


__all__ = ["LatentTraversalMetric", "pixel_correlation", "traverse"]
