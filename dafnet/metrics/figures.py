"""Qualitative figures of an evaluation (registry: figures), as in the paper's Figs. 4, 5, 7 and 8.

* ``anatomy_channels.png`` (Fig. 4): for one sample, each modality's image and its C anatomy channels.
* ``segmentation.png`` (Fig. 5): target images with the truth, the ``single`` and the ``fused``
  predictions as overlays (paper Dice of the slice in the titles).
* ``alignment.png`` (Fig. 7): target and source anatomy (channels summed) and |s_t - s_o| before and
  after Align(s_o -> s_t); the summary has the mean absolute difference before and after.
* ``reconstruction.png`` (Fig. 8): each modality's image and Dec(s, z).

Alignment and reconstruction need the method's ``aligner`` and ``decoder``: the driver calls
:meth:`attach` with the method (figures needing a network the method lacks are skipped) and sets
``output_dir``. The first ``samples`` samples with a labelled target slice are drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from dafnet.interfaces import Metric, MetricInputs, MetricResult, Params
from dafnet.metrics.dice import paper_dice_per_slice


def _figure(rows: int, cols: int, size: float = 1.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * cols, size * rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")
    return str(path)


class FiguresMetric(Metric):
    """Paper-style qualitative figures (anatomy channels, segmentation, alignment, reconstruction)."""

    required_inputs = ()

    class Params(Params):
        samples: int = Field(4, ge=1, le=16, description="samples shown per figure")

    def reset(self) -> None:
        self._predictions: dict = {}  # (case, slice) -> {type: (image, probabilities, truth)}
        self._factors: dict = {}      # (case, slice) -> {modality: (image, anatomy, z)}
        self._order: list = []

    def _key(self, inputs: MetricInputs, b: int):
        index = inputs.slice_index[b].item() if inputs.slice_index is not None else b
        return (str(inputs.case_ids[b]), int(index))

    def update(self, inputs: MetricInputs) -> None:
        batch = len(inputs.case_ids)
        for b in range(batch):
            key = self._key(inputs, b)
            if key not in self._predictions and key not in self._factors:
                if len(self._order) >= 4 * self.params.samples:
                    continue
                self._order.append(key)
            if inputs.prediction is not None and inputs.target is not None and inputs.image is not None:
                self._predictions.setdefault(key, {})[inputs.prediction_type] = (
                    inputs.image[b, 0].detach().cpu(), inputs.prediction[b].detach().cpu(),
                    inputs.target[b].detach().cpu())
            elif inputs.anatomy is not None and inputs.image is not None:
                name = inputs.modality[b] if inputs.modality else "?"
                z = inputs.z[b].detach().cpu() if inputs.z is not None else None
                self._factors.setdefault(key, {})[name] = (inputs.image[b, 0].detach().cpu(),
                                                          inputs.anatomy[b].detach().cpu(), z)

    def compute(self) -> MetricResult:
        if self.output_dir is None:  # nowhere to draw: no figures
            return MetricResult(summary={"figures": 0.0})
        out = Path(self.output_dir)
        method = self.method
        files, summary = [], {}
        labelled = [k for k in self._order if k in self._predictions][: self.params.samples]
        paired = [k for k in self._order if len(self._factors.get(k, {})) >= 2][: self.params.samples]
        if labelled:
            files.append(self._segmentation(out / "segmentation.png", labelled))
        if paired:
            files.append(self._anatomy(out / "anatomy_channels.png", paired[0]))
            target = getattr(method, "target", None)
            if method is not None and callable(getattr(method, "aligner", None)) and target is not None:
                path, before, after = self._alignment(out / "alignment.png", paired, method, target)
                if path:
                    files.append(path)
                    summary["alignment_abs_difference_before"] = before
                    summary["alignment_abs_difference_after"] = after
        with_z = [k for k in self._order if any(v[2] is not None for v in self._factors.get(k, {}).values())]
        if with_z and method is not None and callable(getattr(method, "decoder", None)):
            files.append(self._reconstruction(out / "reconstruction.png", with_z[: self.params.samples], method))
        summary["figures"] = float(len(files))
        return MetricResult(summary=summary, files=files)

    # ------------------------------------------------------------------ the figures
    def _segmentation(self, path: Path, keys) -> str:
        import matplotlib
        from matplotlib.colors import ListedColormap

        kinds = [k for k in ("single", "fused") if any(k in self._predictions[key] for key in keys)]
        kinds = kinds or sorted(self._predictions[keys[0]])[:2]
        fig, axes = _figure(len(keys), 2 + len(kinds))
        colours = matplotlib.colormaps["tab10"].colors
        for r, key in enumerate(keys):
            entry = self._predictions[key]
            image, _, truth = next(iter(entry.values()))
            cmap = ListedColormap([(0, 0, 0, 0)] + [(*colours[i % 10], 0.55) for i in range(9)])
            axes[r, 0].imshow(np.asarray(image), cmap="gray", vmin=-1, vmax=1)
            axes[r, 0].set_ylabel(f"{key[0]}:{key[1]}", fontsize=7)
            axes[r, 1].imshow(np.asarray(image), cmap="gray", vmin=-1, vmax=1)
            axes[r, 1].imshow(truth.numpy(), cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
            axes[0, 1].set_title("truth", fontsize=8)
            for c, kind in enumerate(kinds, start=2):
                if kind not in entry:
                    continue
                _, probabilities, _ = entry[kind]
                dice = paper_dice_per_slice(probabilities[None], truth[None]).item()
                axes[r, c].imshow(np.asarray(image), cmap="gray", vmin=-1, vmax=1)
                axes[r, c].imshow(probabilities.argmax(0).numpy(), cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
                axes[r, c].set_title(f"{kind} {100 * dice:.0f}%", fontsize=8)
        fig.suptitle("segmentation (Fig. 5)", fontsize=9)
        return _save(fig, path)

    def _anatomy(self, path: Path, key) -> str:
        factors = self._factors[key]
        channels = next(iter(factors.values()))[1].shape[0]
        fig, axes = _figure(len(factors), channels + 1)
        for r, (name, (image, anatomy, _)) in enumerate(factors.items()):
            axes[r, 0].imshow(np.asarray(image), cmap="gray", vmin=-1, vmax=1)
            axes[r, 0].set_ylabel(name, fontsize=8)
            for c in range(channels):
                axes[r, c + 1].imshow(np.asarray(anatomy[c]), cmap="gray", vmin=0, vmax=1)
                axes[0, c + 1].set_title(f"s{c + 1}", fontsize=8)
        fig.suptitle(f"anatomy channels of {key[0]} slice {key[1]} (Fig. 4)", fontsize=9)
        return _save(fig, path)

    def _alignment(self, path: Path, keys, method, target):
        rows = []
        for key in keys:
            factors = self._factors[key]
            if target not in factors:
                continue
            source = next(m for m in factors if m != target)
            rows.append((key, factors[target], factors[source], source))
        if not rows:
            return None, float("nan"), float("nan")
        p = next(method.aligner.parameters(), None)
        device = p.device if p is not None else "cpu"
        fig, axes = _figure(len(rows), 5)
        before, after = [], []
        with torch.no_grad():
            for r, (key, (_, s_t, _), (_, s_o, _), source) in enumerate(rows):
                warped = method.aligner(s_o[None].to(device), s_t[None].to(device)).warped[0].cpu()
                d0, d1 = (s_t - s_o).abs().sum(0), (s_t - warped).abs().sum(0)
                before.append(float(d0.mean()))
                after.append(float(d1.mean()))
                panels = [(s_t.sum(0), f"s {target}"), (s_o.sum(0), f"s {source}"), (warped.sum(0), "aligned"),
                          (d0, "|diff| before"), (d1, "|diff| after")]
                for c, (img, title) in enumerate(panels):
                    axes[r, c].imshow(img.numpy(), cmap="magma" if c >= 3 else "gray")
                    if r == 0:
                        axes[r, c].set_title(title, fontsize=8)
                axes[r, 0].set_ylabel(f"{key[0]}:{key[1]}", fontsize=7)
        fig.suptitle("alignment of the anatomy (Fig. 7)", fontsize=9)
        return _save(fig, path), float(np.mean(before)), float(np.mean(after))

    def _reconstruction(self, path: Path, keys, method) -> str:
        rows = [(key, name, v) for key in keys for name, v in self._factors[key].items() if v[2] is not None]
        rows = rows[: 2 * self.params.samples]
        p = next(method.decoder.parameters(), None)
        device = p.device if p is not None else "cpu"
        fig, axes = _figure(len(rows), 3)
        with torch.no_grad():
            for r, (key, name, (image, anatomy, z)) in enumerate(rows):
                y = method.decoder(anatomy[None].to(device).float(), z[None].to(device).float())[0, 0].cpu()
                axes[r, 0].imshow(np.asarray(image), cmap="gray", vmin=-1, vmax=1)
                axes[r, 1].imshow(y.numpy(), cmap="gray", vmin=-1, vmax=1)
                axes[r, 2].imshow((y - image).abs().numpy(), cmap="magma", vmin=0, vmax=1)
                axes[r, 0].set_ylabel(f"{name} {key[0]}:{key[1]}", fontsize=7)
        for c, title in enumerate(("input", "Dec(s, z)", "|difference|")):
            axes[0, c].set_title(title, fontsize=8)
        fig.suptitle("reconstruction (Fig. 8)", fontsize=9)
        return _save(fig, path)


__all__ = ["FiguresMetric"]
