"""DAFNet's training graph and inference (method.md 2 and 5), as functions of a built method.

Batches are the collated samples of :mod:`dafnet.data.slices`: ``images`` (B, n, k, 1, H, W),
``masks`` (B, n, k, H, W), ``labelled`` (B, n, k), ``present`` (B, n). Row ``t`` is the
target modality (its k entries repeat the target slice); candidate 0 of every other row is
the paired (nearest, or shuffled) slice.

Training graph, for every modality i (candidate 0): s_i, q(z | x_i, s_i), m_i = Seg(s_i),
y_i = Dec(s_i, z_i); for every ordered pair i -> j: Align(s_i -> s_j), a cross mask
Seg(.) against j's mask and a cross image Dec(., z_j) against x_j. With k > 1 candidates,
the pairs between the target and another modality j run over j's k candidates, weighted
by w_j = PairingHead(s_t, [Align(s_j^l -> s_t)]_l) (the same weights for both directions);
pairs between two non-target modalities use candidate 0 only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dafnet.components.aligners.thin_plate import sample
from dafnet.interfaces import ModalityOutput


def unless_warming_up(moving: Tensor, warped: Tensor, aligning: bool) -> Tensor:
    """``warped``, or in the aligner warm-up (``aligning`` False) the unaligned ``moving`` with zero
    gradients to the aligner (multiplied by 0 rather than skipped, so DDP's all-reduce stays intact)."""
    return warped if aligning else moving + 0.0 * warped


@dataclass
class Cross:
    """Outputs of one ordered pair i -> j; tensors are (B * kk, ...) with the kk candidates of a sample adjacent."""

    source: int
    dest: int
    seg: object
    """SegmentationOutput of the warped anatomy."""
    image: Tensor | None
    truth_image: Tensor
    truth_mask: Tensor
    truth_labelled: Tensor
    weights: Tensor | None
    """(B, kk) pairing weights; None with one candidate."""
    candidates: int
    warped: Tensor | None = None
    """(B * kk, C, H, W) Align(s_i -> s_j), as the segmentor and decoder read it."""
    fixed: Tensor | None = None
    """(B * kk, C, H, W) s_j, the anatomy it was aligned to."""
    moving: Tensor | None = None
    """(B * kk, C, H, W) s_i before the warp."""
    grid: Tensor | None = None
    """(B * kk, H, W, 2) the aligner's sampling grid (``AlignmentOutput.grid``)."""
    aligning: bool = True
    """False in the aligner warm-up: ``warped`` is the unaligned anatomy."""
    grid_detached: bool = False
    """True with ``method.params.aligner_learns_from: alignment_terms``: ``warped`` was moved by the grid
    without its gradients, so the cross terms do not reach the aligner."""

    def resample(self, content: Tensor) -> Tensor:
        """(B * kk, C, H, W) ``content`` in s_i's frame moved by this pair's grid, as ``warped`` was
        (the warm-up rule included)."""
        return unless_warming_up(content, sample(content, self.grid), self.aligning)

    def batch_value(self, values: Tensor, with_truth: bool) -> Tensor:
        """Per-sample-candidate ``values`` (B * kk,) -> one batch value, pairing-weighted over candidates;
        ``with_truth``: a mean over the samples whose truth is labelled only."""
        v = rows(values, self.candidates)
        w = self.weights if self.weights is not None else torch.ones_like(v)
        if not with_truth:
            return (w * v).sum(1).mean()
        has = rows(self.truth_labelled, self.candidates).to(v.dtype)
        count = (has.sum(1) > 0).sum()
        return (w * has * v).sum() / count.clamp_min(1)

    def aligner_view(self) -> Tensor:
        """``warped`` with gradients to the aligner whatever ``aligner_learns_from`` says: what the alignment
        terms read."""
        return self.resample(self.moving) if self.grid_detached else self.warped


@dataclass
class Graph:
    anatomy: list[Tensor] = field(default_factory=list)
    modality: list[ModalityOutput] = field(default_factory=list)
    segmentation: list = field(default_factory=list)
    reconstruction: list = field(default_factory=list)
    crosses: list[Cross] = field(default_factory=list)


def flat(x: Tensor) -> Tensor:
    """(B, k, ...) -> (B * k, ...)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def rows(x: Tensor, k: int) -> Tensor:
    """(B * k, ...) -> (B, k, ...)."""
    return x.reshape(x.shape[0] // k, k, *x.shape[1:])


def _first(q: ModalityOutput, kk: int) -> ModalityOutput:
    return ModalityOutput(z=rows(q.z, kk)[:, 0], mu=rows(q.mu, kk)[:, 0], logvar=rows(q.logvar, kk)[:, 0])


def training_graph(method, batch: dict, with_images: bool = True) -> Graph:
    """The forward pass of one training batch (see the module docstring)."""
    images, masks, labelled = batch["images"], batch["masks"], batch["labelled"]
    n, t = images.shape[1], method.target_index
    k = method.num_candidates
    graph = Graph()
    aligning = getattr(method, "aligning", True)
    params = getattr(method, "params", None)
    grid_constant = getattr(params, "aligner_learns_from", "all") == "alignment_terms"
    cand_s, cand_z = {}, {}
    for i in range(n):
        kk = k if i != t else 1
        x = flat(images[:, i, :kk])
        s = method.anatomy_encoder(x, i).anatomy
        q = method.modality_encoder(x, s)
        cand_s[i], cand_z[i] = rows(s, kk), rows(q.z, kk)
        graph.anatomy.append(cand_s[i][:, 0])
        graph.modality.append(_first(q, kk))
        graph.segmentation.append(method.segmentor(graph.anatomy[i]))
        graph.reconstruction.append(method.decoder(graph.anatomy[i], graph.modality[i].z) if with_images else None)

    def cross(i, j, moving, fixed, z, truth, weights):
        kk = moving.shape[1]
        aligned = method.aligner(flat(moving), flat(fixed))
        warped = unless_warming_up(flat(moving), aligned.warped, aligning)
        if grid_constant:  # the cross terms see the aligner's grid as a constant; Cross.aligner_view does not
            warped = unless_warming_up(flat(moving), sample(flat(moving), aligned.grid.detach()), aligning)
        if weights is None and kk > 1:
            weights = method.pairing_head(cand_s[t][:, 0], rows(warped, kk)).weights
        image = method.decoder(warped, flat(z)) if with_images else None
        return Cross(i, j, method.segmentor(warped), image, *(flat(v) for v in truth), weights, kk,
                     warped=warped, fixed=flat(fixed), moving=flat(moving), grid=aligned.grid, aligning=aligning,
                     grid_detached=grid_constant)

    weights_of = {}
    for i in range(n):  # every other modality onto the target first: it yields the pairing weights
        if i == t:
            continue
        kk = cand_s[i].shape[1]
        truth = (images[:, t, :kk], masks[:, t, :kk], labelled[:, t, :kk])
        c = cross(i, t, cand_s[i], cand_s[t].expand(-1, kk, -1, -1, -1), cand_z[t].expand(-1, kk, -1), truth, None)
        weights_of[i] = c.weights
        graph.crosses.append(c)
    for j in range(n):  # the target onto every other modality's candidates, same weights
        if j == t:
            continue
        kk = cand_s[j].shape[1]
        truth = (images[:, j, :kk], masks[:, j, :kk], labelled[:, j, :kk])
        graph.crosses.append(cross(t, j, cand_s[t].expand(-1, kk, -1, -1, -1), cand_s[j], cand_z[j], truth,
                                   weights_of[j]))
    for i in range(n):  # pairs of two non-target modalities: candidate 0 only
        for j in range(n):
            if i != j and t not in (i, j):
                truth = (images[:, j, :1], masks[:, j, :1], labelled[:, j, :1])
                graph.crosses.append(cross(i, j, cand_s[i][:, :1], cand_s[j][:, :1], cand_z[j][:, :1], truth, None))
    return graph


def first_candidate(x: Tensor, kk: int) -> Tensor:
    """(B * kk, ...) -> the candidate-0 entries (B, ...)."""
    return rows(x, kk)[:, 0]
