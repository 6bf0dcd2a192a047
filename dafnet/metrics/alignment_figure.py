"""``alignment_error.png`` of the alignment metric: the error's cumulative distribution (aligner vs
identity, mm) and, when a sample with the source's mask was seen, one example: the target image
with the truth's contours (solid) and the source mask's (dashed), copied as it is and copied
through the aligner's grid (bilinear, arg-max; as ``aligned_copy_<m>``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator

from dafnet.components.aligners.thin_plate import sample
from dafnet.metrics.figures import _figure, _save


def _cdf(ax, values: np.ndarray, label: str, style: str) -> None:
    if values.size == 0:
        return
    ordered = np.sort(values)
    ax.plot(ordered, np.arange(1, ordered.size + 1) / ordered.size, style,
            label=f"{label} (median {np.median(ordered):.2f} mm)")


def _contours(ax, mask: np.ndarray, style: str) -> None:
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    for c in range(1, int(mask.max()) + 1):
        if (mask == c).any():
            ax.contour((mask == c).astype(float), levels=[0.5], colors=[colours[(c - 1) % 10]],
                       linestyles=style, linewidths=1.0)


def aligned_copy(source_mask, grid) -> np.ndarray:
    """(H, W) source mask moved by the (H, W, 2) grid: one-hot, bilinear, arg-max."""
    classes = int(source_mask.max()) + 1
    one_hot = F.one_hot(source_mask.long(), classes).permute(2, 0, 1)[None].to(grid.dtype)
    return sample(one_hot, grid[None])[0].argmax(0).numpy()


def draw_alignment_error(path: Path, aligner: np.ndarray, identity: np.ndarray, example: dict | None) -> str:
    fig, axes = _figure(1, 3 if example is not None else 1, size=3.0)
    ax = axes[0, 0]
    _cdf(ax, identity, "identity", "--")
    _cdf(ax, aligner, "aligner", "-")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_yticks([0, 0.5, 0.95, 1])
    ax.set_xlabel("in-plane error vs truth (mm)", fontsize=8)
    ax.set_ylabel("share of foreground pixels", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    if example is not None:
        image, truth = example["image"].numpy(), example["truth"].numpy()
        copies = (("copied", example["source_mask"].numpy()),
                  ("aligned copy", aligned_copy(example["source_mask"], example["grid"])))
        for c, (title, copy) in enumerate(copies, start=1):
            axes[0, c].imshow(image, cmap="gray", vmin=-1, vmax=1)
            _contours(axes[0, c], truth, "solid")
            _contours(axes[0, c], copy, "dashed")
            axes[0, c].set_title(f"{example['source']} mask {title}", fontsize=8)
        axes[0, 1].set_ylabel(example["case"], fontsize=7)
    fig.suptitle("alignment error against the truth (solid: target truth, dashed: source mask)", fontsize=8)
    return _save(fig, path)


__all__ = ["aligned_copy", "draw_alignment_error"]
