"""Named deviations ``losses.contrast_anatomy`` and ``losses.contrast_sup``: every modality's encoder learns
to draw a labelled image's anatomy whatever its contrast (the aligner's terms under a known motion,
``contrast_align`` and ``motion_align``, are in :mod:`.alignment_terms`).

The diagnosis they answer (docs/results.md, "What limits the aligner"): with no labels of the target,
its encoder draws the anatomy differently from the labelled modality's (the T2 encoder's left
ventricle a filled disc, the cine's a ring), so the best match of the two anatomies is not the true
correspondence, and the aligner cannot be better than that mismatch allows.

For every labelled sample of modality i and every other modality j, the image x_i is given a random
contrast by a random shallow network (:func:`random_contrast`, after the global intensity non-linear
augmentation of Ouyang et al., "Causality-inspired single-source domain generalization for medical
image segmentation", IEEE TMI 2022) and encoded by j's encoder: s = E_j(GIN(x_i)).

* ``contrast_anatomy``: mean |s - s_i| (s_i a constant): j's encoder gives the labelled modality's
  anatomy for the same structure under any contrast, so the two modalities' anatomies share their
  channels' meaning, which the anatomy alignment term then matches;
* ``contrast_sup``: L_sup(Seg(s), i's mask): j's encoder and the segmentor learn the structures from
  exact labels in contrasts other than i's own.

Unlike ``translated_*`` (the decoder renders i's anatomy in j's style) the images do not depend on
how well the decoder has learned j's style, and no direction runs from an unlabelled modality, whose
anatomy is the one in doubt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_contrast(images: Tensor, layers: int = 4, hidden: int = 2, slope: float = 0.2,
                    kernel_sizes: tuple[int, ...] = (1, 3)) -> Tensor:
    """(B, 1, H, W) images in [-1, 1] -> the same structures in a random contrast, each rescaled to [-1, 1].

    Each sample gets its own network of ``layers`` convolutions (sizes drawn per layer from ``kernel_sizes``;
    weights normal with std 1 / sqrt(fan-in), biases standard normal; ``hidden`` channels; leaky ReLU
    between), so intensities are remapped non-monotonically and textures change while every edge stays
    where it was. The output is mixed with the input by a random share alpha ~ U(0, 1) and min-max
    rescaled per sample, as the data are."""
    b, c, h, w = images.shape
    x = images.reshape(1, b * c, h, w).float()
    channels = c
    for layer in range(layers):
        out = 1 if layer == layers - 1 else hidden
        k = kernel_sizes[int(torch.randint(len(kernel_sizes), ()))]
        weight = torch.randn(b * out, channels, k, k, device=x.device) / (channels * k * k) ** 0.5
        bias = torch.randn(b * out, device=x.device)
        x = F.conv2d(x, weight, bias, padding=k // 2, groups=b)
        if layer < layers - 1:
            x = F.leaky_relu(x, slope)
        channels = out
    alpha = torch.rand(b, 1, 1, 1, device=x.device)
    mixed = alpha * _rescale(x.view(b, 1, h, w)) + (1 - alpha) * images.float()
    return _rescale(mixed).to(images.dtype)


def _rescale(x: Tensor) -> Tensor:
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return 2 * (x - lo) / (hi - lo).clamp_min(1e-6) - 1


def contrast_terms(method, graph, batch: dict, with_sup: bool) -> tuple[Tensor, Tensor]:
    """(contrast_anatomy, contrast_sup) summed over ordered pairs i -> j (i != j), each a mean over
    the samples where i has ground truth; zero where none has."""
    labelled, masks, images = batch["labelled"], batch["masks"], batch["images"]
    anatomy = sup = graph.anatomy[0].new_zeros(())
    n = len(graph.anatomy)
    for i in range(n):
        has = labelled[:, i, 0]
        if not bool(has.any()):
            continue
        with torch.no_grad():
            recontrasted = random_contrast(images[has, i, 0])
        s_i = graph.anatomy[i][has].detach()
        for j in range(n):
            if i == j:
                continue
            s = method.anatomy_encoder(recontrasted, j).anatomy
            anatomy = anatomy + (s - s_i).abs().flatten(1).mean(1).mean()
            if with_sup:
                sup = sup + method.supervised.per_sample(method.segmentor(s).logits, masks[has, i, 0]).mean()
    return anatomy, sup
