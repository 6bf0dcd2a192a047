"""The terms the aligner learns from besides the cross terms, all named deviations (docs/method.md):
``losses.anatomy_align`` (each warped anatomy against the anatomy it was aligned to), ``losses.displacement_l2``
(each pair's displacement from the identity) and the terms under a known random motion, ``losses.contrast_align``
and ``losses.motion_align``, which give the aligner pairs whose misalignment is known.

``contrast_align`` gives the aligner pairs whose misalignment is known: x_i in a random contrast and moved
by a random rigid motion (drawn as ``data.augment.misalignment_degrees`` / ``misalignment_shift`` draw
theirs) is encoded by j's encoder, s' = E_j(x'); the aligner warps s_i onto s' (both constants: only the
aligner learns from it), and the same grid moves i's mask, which must land on the moved mask (1 - soft
Dice over the foreground channels). The aligner so learns to register each pair, not a typical correction.

``motion_align`` is the same without the random contrast: x_i moved by a random rigid motion through i's own
encoder, s' = E_i(move(x_i)), so the aligner learns to register an anatomy under a known motion while no
encoder learns to read images of another contrast (the encoders' random-contrast terms cost the target's own
anatomy where its stacks are nearly aligned, docs/results.md).

Only the aligner learns from the known-motion terms: both anatomies enter as constants. No direction runs from an
unlabelled modality, whose anatomy is the one in doubt.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dafnet.components.aligners.thin_plate import displacement_from_identity, sample
from dafnet.data.augment import foreground_onehot, rigid_theta, warp_images, warp_soft_masks
from dafnet.losses import soft_dice_distance
from dafnet.methods.dafnet.graph import Graph
from dafnet.methods.dafnet.random_contrast import random_contrast


def anatomy_alignment(graph: Graph, measure: str = "l1", trains: str = "all") -> Tensor:
    """Named deviation (``losses.anatomy_align``): how far Align(s_i -> s_j) is from s_j over every
    ordered pair (pairing-weighted over candidates). Each anatomy is held in its own image's frame by
    its reconstruction (and the source's by its masks), so this is lowest when the aligner undoes
    the true misalignment; it also pulls an unlabelled modality's anatomy towards the same channel
    semantics as the labelled one's. Needs no labels.

    ``measure`` (``method.params.anatomy_align_measure``): ``l1``, mean |Align(s_i -> s_j) - s_j|;
    ``dice``, 1 - soft Dice of the two over every channel and pixel of a sample. Under L1 an empty
    s_j (no channel above 0.5 anywhere) is matched by warping s_i out of the frame; under Dice an
    empty anatomy on either side is the worst value (1), so that way out is closed.

    ``trains`` (``method.params.anatomy_align_trains``): ``all``, the term's gradient reaches both
    anatomies and the aligner; ``grid``, s_i and s_j enter as constants (s_i resampled by the aligner's
    grid), so the term reaches the networks only through the grid and cannot make the anatomies
    sparser to shrink an L1 disagreement (in the aligner warm-up the grid gets none, as for ``warped``)."""
    total = graph.anatomy[0].new_zeros(())
    for c in graph.crosses:
        warped, fixed = c.aligner_view(), c.fixed
        if trains == "grid":
            warped, fixed = c.resample(c.moving.detach()), c.fixed.detach()
        if measure == "dice":
            per_sample = soft_dice_distance(warped, fixed)  # both empty: 1
        else:
            per_sample = (warped - fixed).abs().flatten(1).mean(1)
        total = total + c.batch_value(per_sample, False)
    return total


def displacement_l2(graph: Graph) -> Tensor:
    """Named deviation (``losses.displacement_l2``): the mean squared displacement of each pair's sampling grid
    from the identity, in units of the slice's side (grid units span 2 per side), over every pixel and ordered
    pair (pairing-weighted over candidates). A prior that the stacks are close to registered (as scanner
    coordinates leave them): where the other terms do not tell a displacement apart, it pulls the aligner back
    to the identity instead of letting it drift. Pairs in the aligner warm-up add nothing."""
    total = graph.anatomy[0].new_zeros(())
    for c in graph.crosses:
        if not c.aligning:
            continue
        per_sample = displacement_from_identity(c.grid).square().sum(-1).flatten(1).mean(1)
        total = total + c.batch_value(per_sample, False)
    return total


def _random_motions(batch_size: int, degrees: float, shift: float, height: int, width: int) -> Tensor:
    """(B, 3, 3) random rigid motions: rotation ~ U(-degrees, degrees), shift ~ U(-shift, shift) per axis."""
    draws = (torch.rand(batch_size, 3) * 2 - 1).tolist()
    return torch.stack([rigid_theta(r * degrees, height, width, (x * shift, y * shift)) for r, x, y in draws])


def contrast_alignment(method, graph, batch: dict) -> Tensor:
    """``contrast_align``: 1 - soft Dice of i's mask moved by Align(s_i -> E_j(move(GIN(x_i)))) against the
    moved mask, summed over ordered pairs i -> j (i != j) with i labelled, a mean over those samples.
    A slice whose mask has no foreground says nothing about the registration (its soft Dice distance is
    a constant 1): it is left out, so the term's scale does not shrink with the share of such slices."""
    return _known_motion_alignment(method, graph, batch, own_encoder=False)


def motion_alignment(method, graph, batch: dict) -> Tensor:
    """``motion_align``: as ``contrast_align`` with the labelled image in its own contrast and through its own
    encoder: 1 - soft Dice of i's mask moved by Align(s_i -> E_i(move(x_i))) against the moved mask, summed over
    the labelled modalities i. The aligner learns to register an anatomy under a known motion without any
    encoder learning to read images of another contrast."""
    return _known_motion_alignment(method, graph, batch, own_encoder=True)


def _known_motion_alignment(method, graph, batch: dict, own_encoder: bool) -> Tensor:
    labelled, masks, images = batch["labelled"], batch["masks"], batch["images"]
    context, classes = method.context, method.num_classes + 1
    total = graph.anatomy[0].new_zeros(())
    n = len(graph.anatomy)
    for i in range(n):
        has = labelled[:, i, 0] & (masks[:, i, 0] > 0).flatten(1).any(1)
        if not bool(has.any()):
            continue
        mask = masks[has, i, 0]
        height, width = mask.shape[-2:]
        theta = _random_motions(mask.shape[0], context.misalignment_degrees, context.misalignment_shift,
                                height, width).to(mask.device)
        with torch.no_grad():
            image = images[has, i, 0] if own_encoder else random_contrast(images[has, i, 0])
            moved_image = warp_images(image, theta)
            moved_mask = warp_soft_masks(mask, theta, classes)
            onehot = foreground_onehot(mask, classes)
        s_i = graph.anatomy[i][has].detach()
        for j in ([i] if own_encoder else [j for j in range(n) if j != i]):
            with torch.no_grad():
                fixed = method.anatomy_encoder(moved_image, j).anatomy
            grid = method.aligner(s_i, fixed).grid
            moved = sample(onehot.to(grid.dtype), grid)
            total = total + soft_dice_distance(moved, moved_mask.to(grid.dtype)).mean()
    return total
