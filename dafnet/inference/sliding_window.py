"""Sliding-window inference with Gaussian blending, as MONAI's ``sliding_window_inference`` and
nnU-Net's predictor do it, for 2D slices and several input sequences at once.

A prediction function that takes windows of a fixed size (the networks' training crop) covers
an image of any size: windows at that size are placed on a regular grid that overlaps by
``overlap`` and whose last window ends exactly at the image edge (:func:`window_starts`), the
softmax probabilities of every window are weighted by a Gaussian importance map (sigma = 1/8 of
the window, largest at its centre, :func:`gaussian_importance`) and summed, and the sum is
divided by the summed weights. Every pixel lies in at least one window, so every pixel gets
probabilities that sum to 1. An image smaller than the window is padded (``fill``) to the
window and the result cropped back; an image of the window's size is one window, and its
probabilities are returned as they are.

Several sequences (``inputs``) are cut at the same window positions, so a multimodal method
(DAFNet: encoders, aligner, fuser, segmentor) runs on each set of co-located windows.

Test-time mirroring (:func:`mirrored`, nnU-Net's ``use_mirroring``): a window set is also
predicted flipped along the rows, the columns and both (every sequence flipped alike), each
prediction is flipped back, and the four are averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

SIGMA_SCALE = 0.125
"""Gaussian sigma as a fraction of the window size (MONAI's ``sigma_scale``, nnU-Net's 1/8)."""


MIRROR_AXES: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))
"""The flips of test-time mirroring: none, rows, columns, both (all combinations of the in-plane
axes, as nnU-Net mirrors a 2D patch)."""


def mirrored(predict: Callable[[dict[str, Tensor]], Tensor]) -> Callable[[dict[str, Tensor]], Tensor]:
    """``predict`` averaged over :data:`MIRROR_AXES`: every input of the window set is flipped
    alike, and each output is flipped back before the mean."""
    def averaged(images: dict[str, Tensor]) -> Tensor:
        total = None
        for axes in MIRROR_AXES:
            flipped = {k: x.flip(axes) for k, x in images.items()} if axes else images
            out = predict(flipped)
            out = out.flip(axes) if axes else out
            total = out if total is None else total + out
        return total / len(MIRROR_AXES)

    return averaged


def window_starts(size: int, window: int, overlap: float = 0.5) -> list[int]:
    """Start indices of windows of length ``window`` covering ``[0, size)``, neighbours
    overlapping by at least ``overlap`` of a window, spread evenly, the first at 0 and the last
    at ``size - window`` (nnU-Net's ``compute_steps_for_sliding_window``). ``size <= window``:
    one window at 0."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= window:
        return [0]
    step = window * (1.0 - overlap)
    count = math.ceil((size - window) / step) + 1
    actual = (size - window) / (count - 1)
    return [int(round(actual * i)) for i in range(count)]


def window_positions(shape: tuple[int, int], window: tuple[int, int],
                     overlap: float = 0.5) -> list[tuple[slice, slice]]:
    """(row slice, col slice) of every window over an (H, W) image, row by row."""
    rows = window_starts(shape[0], window[0], overlap)
    cols = window_starts(shape[1], window[1], overlap)
    return [(slice(r, r + window[0]), slice(c, c + window[1])) for r in rows for c in cols]


def gaussian_importance(window: tuple[int, int], sigma_scale: float = SIGMA_SCALE,
                        device=None, dtype=torch.float32) -> Tensor:
    """(h, w) Gaussian weights centred on the window, sigma = ``sigma_scale`` x its size per
    axis, scaled to a maximum of 1 (and positive everywhere)."""
    axes = []
    for n in window:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-6)
        axes.append(torch.exp(-0.5 * (x / sigma) ** 2))
    weights = axes[0][:, None] * axes[1][None, :]
    weights = weights / weights.max()
    smallest = weights[weights > 0].min()  # as MONAI/nnU-Net: no zero weight at the corners
    return weights.clamp_min(smallest).to(device=device, dtype=dtype)


def sliding_window_inference(inputs: Mapping[str, Tensor], window: tuple[int, int],
                             predict: Callable[[dict[str, Tensor]], Tensor], overlap: float = 0.5,
                             batch_size: int = 16, sigma_scale: float = SIGMA_SCALE,
                             fill: float = -1.0) -> Tensor:
    """Blended (N, K, H, W) probabilities of ``predict`` over images of any size.

    ``inputs``: name -> (N, C, H, W), the same N, H, W for every name (co-located slices).
    ``predict``: name -> (B, C, h, w) windows (``window`` = (h, w)) -> (B, K, h, w) probabilities;
    it is called on at most ``batch_size`` windows at a time (windows of several slices and
    positions together). Images smaller than the window are padded with ``fill`` (centred) and
    the result cropped back.
    """
    names = list(inputs)
    first = inputs[names[0]]
    n, height, width = first.shape[0], first.shape[-2], first.shape[-1]
    for name, x in inputs.items():
        if x.ndim != 4 or x.shape[0] != n or x.shape[-2:] != first.shape[-2:]:
            raise ValueError(f"sliding window: input {name!r} is {tuple(x.shape)}, expected "
                             f"({n}, C, {height}, {width})")
    pad = [max(0, w - s) for w, s in zip(window, (height, width))]
    before = [p // 2 for p in pad]
    if any(pad):
        padding = (before[1], pad[1] - before[1], before[0], pad[0] - before[0])
        inputs = {k: F.pad(x, padding, value=fill) for k, x in inputs.items()}
    shape = tuple(inputs[names[0]].shape[-2:])
    positions = window_positions(shape, window, overlap)
    importance = gaussian_importance(window, sigma_scale, device=first.device)
    if len(positions) == 1:  # nothing to blend: the window's own probabilities, exactly
        importance = torch.ones_like(importance)
    total = weight = None
    items = [(i, p) for p in positions for i in range(n)]
    for begin in range(0, len(items), batch_size):
        chunk = items[begin:begin + batch_size]
        batch = {k: torch.stack([x[i, :, r, c] for i, (r, c) in chunk]) for k, x in inputs.items()}
        probabilities = predict(batch)
        if total is None:
            total = probabilities.new_zeros((n, probabilities.shape[1], *shape))
            weight = importance.new_zeros(shape)
        weighted = probabilities * importance.to(probabilities.dtype)
        for b, (i, (r, c)) in enumerate(chunk):
            total[i, :, r, c] += weighted[b]
    for r, c in positions:
        weight[r, c] += importance
    out = total / weight
    return out[..., before[0]:before[0] + height, before[1]:before[1] + width]
