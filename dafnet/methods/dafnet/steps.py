"""DAFNet's optimisation steps (method.md 2, 3): the generator step and the LS-GAN critic steps.

Each step is ``(batch, scratch) -> LossOutput`` with the weighted total and the unweighted,
detached terms. The generator step leaves detached fakes and the real masks/images in
``scratch`` for the critic steps of the same batch; a critic step without them runs the
generator forward itself (no gradients).

Reductions follow the original code: each output (a mask, an image, a modality) is a batch
mean and a term sums its outputs. Supervised outputs average over the samples that have
ground truth; with k candidates a sample's value is the pairing-weighted sum over them.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from dafnet.interfaces import Facts, LossOutput
from dafnet.losses import (
    KLDivergenceLoss,
    L1ReconstructionLoss,
    LSGANDiscriminatorLoss,
    SupervisedLoss,
    ZReconstructionLoss,
    one_hot_target,
)
from dafnet.methods.dafnet import alignment_terms, anatomy_critic, random_contrast
from dafnet.methods.dafnet.graph import Graph, first_candidate, training_graph


def add_loss_terms(method, params, facts: Facts) -> None:
    """The loss terms the steps call, as attributes of ``method`` (DAFNet's and SDNet's): L_sup with
    ``params.ce_weight`` and ``params.dice_smooth``, KL, L1, L_rec^z and the critics' LS-GAN loss."""
    method.supervised = SupervisedLoss(SupervisedLoss.Params(ce_weight=params.ce_weight, smooth=params.dice_smooth),
                                       facts)
    method.kl = KLDivergenceLoss(KLDivergenceLoss.Params(), facts)
    method.l1 = L1ReconstructionLoss(L1ReconstructionLoss.Params(), facts)
    method.z_reconstruction = ZReconstructionLoss(ZReconstructionLoss.Params(), facts)
    method.lsgan_discriminator = LSGANDiscriminatorLoss(LSGANDiscriminatorLoss.Params(), facts)


@contextmanager
def frozen(modules):
    """Parameters of ``modules`` do not require gradients inside the block (restored after)."""
    params = [p for m in modules for p in m.parameters()]
    states = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, state in zip(params, states):
            p.requires_grad_(state)


def _supervised(method, graph: Graph, batch: dict) -> Tensor:
    labelled, masks = batch["labelled"], batch["masks"]
    total = graph.anatomy[0].new_zeros(())
    for i, seg in enumerate(graph.segmentation):
        has = labelled[:, i, 0]
        if bool(has.any()):
            total = total + method.supervised.per_sample(seg.logits[has], masks[has, i, 0]).mean()
    for c in graph.crosses:
        if bool(c.truth_labelled.any()):
            total = total + c.batch_value(method.supervised.per_sample(c.seg.logits, c.truth_mask), True)
    return total


def _fused_supervised(method, graph: Graph) -> Tensor:
    """Named deviation (``losses.fused_sup``): L_sup of Seg(Fuse(s_j, Align(s_i -> s_j))) against
    j's mask, for every ordered pair whose destination has ground truth, so the segmentor also
    learns to read fused anatomies (the paper gives fusion no loss, footnote 6). With
    ``method.params.fused_sup_detach_warped`` the warped anatomy is a constant of the term."""
    total = graph.anatomy[0].new_zeros(())
    detach = method.params.fused_sup_detach_warped
    for c in graph.crosses:
        if bool(c.truth_labelled.any()):
            warped = c.warped.detach() if detach else c.warped
            seg = method.segmentor(method.fuser([c.fixed, warped]))
            total = total + c.batch_value(method.supervised.per_sample(seg.logits, c.truth_mask), True)
    return total


def _translated(method, graph: Graph, batch: dict, with_sup: bool) -> tuple[Tensor, Tensor]:
    """Named deviations (``losses.translated_anatomy``, ``losses.translated_sup``): for every ordered pair
    i -> j, i's anatomy rendered in j's style, x = Dec(s_i, z_j) (no gradients: a synthetic image of
    modality j in i's frame), is encoded by j's encoder, s = E_j(x). ``translated_anatomy``: mean |s - s_i|
    (s_i a constant), so each modality's encoder gives the anatomy the other's gives for the same
    structure, which the aligner then matches; ``translated_sup``: L_sup(Seg(s), i's mask) where i is
    labelled, the segmentor trained on j-style images with exact labels. Both need no labels of j."""
    labelled, masks = batch["labelled"], batch["masks"]
    anatomy = sup = graph.anatomy[0].new_zeros(())
    n = len(graph.anatomy)
    for i in range(n):
        s_i = graph.anatomy[i].detach()
        for j in range(n):
            if i == j:
                continue
            with torch.no_grad():
                image = method.decoder(s_i, graph.modality[j].z)
            s = method.anatomy_encoder(image, j).anatomy
            anatomy = anatomy + (s - s_i).abs().flatten(1).mean(1).mean()
            has = labelled[:, i, 0]
            if with_sup and bool(has.any()):
                sup = sup + method.supervised.per_sample(method.segmentor(s[has]).logits, masks[has, i, 0]).mean()
    return anatomy, sup


def _reconstruction(method, graph: Graph, batch: dict) -> Tensor:
    images = batch["images"]
    total = sum(method.l1(y, images[:, i, 0]) for i, y in enumerate(graph.reconstruction))
    for c in graph.crosses:
        total = total + c.batch_value(method.l1.per_sample(c.image, c.truth_image), False)
    return total


def _critic_sum(critic, fakes: list[Tensor]) -> Tensor:
    """Sum over outputs of mean (D(fake) - 1)^2, one critic pass over all of them."""
    scores = critic(torch.cat(fakes)).float().view(len(fakes), -1)
    return (scores - 1).pow(2).mean(dim=1).sum()


def mask_fakes(graph: Graph, modality: int) -> list[Tensor]:
    """Foreground channels of the masks predicted for ``modality``: its own and the cross masks onto it."""
    out = [graph.segmentation[modality].probabilities[:, 1:]]
    out += [first_candidate(c.seg.probabilities, c.candidates)[:, 1:] for c in graph.crosses if c.dest == modality]
    return out


def image_fakes(graph: Graph, modality: int) -> list[Tensor]:
    """Images synthesised in ``modality``'s style: its reconstruction and the cross images onto it."""
    out = [graph.reconstruction[modality]]
    out += [first_candidate(c.image, c.candidates) for c in graph.crosses if c.dest == modality]
    return out


def real_masks(batch: dict, num_channels: int) -> Tensor:
    """Foreground channels of every labelled (candidate-0) mask of every modality: (R, L, H, W);
    the bilinearly resampled ``soft_masks`` where the batch carries them (``real_mask_rotation``);
    the batch's ``pool_masks`` (B, L, H, W) instead where it carries them (``critic_real_masks: pool``)."""
    if "pool_masks" in batch:
        return batch["pool_masks"]
    labelled = batch["labelled"][:, :, 0]
    if "soft_masks" in batch:
        return batch["soft_masks"][:, :, 0][labelled]
    return one_hot_target(batch["masks"][:, :, 0][labelled], num_channels)[:, 1:]


_PAIRED_TERMS = ((("translated_anatomy", "translated_sup"), _translated),
                 (("contrast_anatomy", "contrast_sup"), random_contrast.contrast_terms))


def generator_step(method, batch: dict, scratch: dict) -> LossOutput:
    """The generator (all non-critic networks) step of one batch."""
    w = method.weights
    n = batch["images"].shape[1]
    needs_images = w["rec"] > 0 or w["adv_image"] > 0
    with frozen(method.critics()):
        graph = training_graph(method, batch, with_images=needs_images)
        terms: dict[str, Tensor] = {}
        if w["sup"] > 0:
            terms["sup"] = _supervised(method, graph, batch)
        if w.get("anatomy_align", 0) > 0:
            terms["anatomy_align"] = alignment_terms.anatomy_alignment(graph, method.params.anatomy_align_measure,
                                                                       method.params.anatomy_align_trains)
        if w.get("displacement_l2", 0) > 0:
            terms["displacement_l2"] = alignment_terms.displacement_l2(graph)
        if w.get("fused_sup", 0) > 0:
            terms["fused_sup"] = _fused_supervised(method, graph)
        for names, compute in _PAIRED_TERMS:  # (an anatomy term, a supervised term) computed together
            on = {name for name in names if w.get(name, 0) > 0 and method.weight_now(name) > 0}
            if on:
                values = dict(zip(names, compute(method, graph, batch, names[1] in on)))
                terms.update({name: value for name, value in values.items() if name in on})
        if w.get("contrast_align", 0) > 0:
            terms["contrast_align"] = alignment_terms.contrast_alignment(method, graph, batch)
        if w.get("motion_align", 0) > 0:
            terms["motion_align"] = alignment_terms.motion_alignment(method, graph, batch)
        if w["adv_mask"] > 0:
            terms["adv_mask"] = _critic_sum(method.mask_discriminator,
                                            [f for i in range(n) for f in mask_fakes(graph, i)])
        if w.get("adv_anatomy", 0) > 0:
            terms["adv_anatomy"] = _critic_sum(method.anatomy_discriminator,
                                               [anatomy_critic.anatomy_fakes(method, graph)])
        if w["rec"] > 0:
            terms["rec"] = _reconstruction(method, graph, batch)
        if w["adv_image"] > 0:
            terms["adv_image"] = sum(_critic_sum(method.image_discriminators[i], image_fakes(graph, i))
                                     for i in range(n))
        if w["kl"] > 0:
            terms["kl"] = sum(method.kl(q.mu, q.logvar) for q in graph.modality)
        if w["z_rec"] > 0:
            terms["z_rec"] = sum(_z_reconstruction(method, s) for s in graph.anatomy)
    if not terms:
        raise RuntimeError("every DAFNet loss weight is 0: nothing to train")
    total = sum(method.weight_now(name) * value for name, value in terms.items())
    _store(method, graph, batch, scratch)
    return LossOutput(total=total, terms={k: v.detach() for k, v in terms.items()})


def _z_reconstruction(method, anatomy: Tensor) -> Tensor:
    z = torch.randn(anatomy.shape[0], method.z_dim, device=anatomy.device, dtype=anatomy.dtype)
    image = method.decoder(anatomy, z)
    return method.z_reconstruction(z, method.modality_encoder(image, anatomy).mu)


def _store(method, graph: Graph, batch: dict, scratch: dict) -> None:
    n = batch["images"].shape[1]
    if method.mask_discriminator is not None:
        scratch["real_masks"] = real_masks(batch, method.num_classes + 1)
        scratch["fake_masks"] = [torch.cat(mask_fakes(graph, i)).detach() for i in range(n)]
    if method.anatomy_discriminator is not None:
        anatomy_critic.store(method, graph, scratch)
    if method.image_discriminators is not None and graph.reconstruction[0] is not None:
        scratch["real_images"] = [batch["images"][:, i, 0] for i in range(n)]
        scratch["fake_images"] = [torch.cat(image_fakes(graph, i)).detach() for i in range(n)]


def _ensure_fakes(method, batch: dict, scratch: dict, key: str) -> None:
    if key in scratch:
        return
    with torch.no_grad():
        graph = training_graph(method, batch, with_images=method.image_discriminators is not None)
    _store(method, graph, batch, scratch)


def mask_critic_step(method, modality: int, batch: dict, scratch: dict) -> LossOutput:
    """Mask discriminator step on the masks predicted for one modality vs all real masks."""
    _ensure_fakes(method, batch, scratch, "fake_masks")
    critic, fake = method.mask_discriminator, scratch["fake_masks"][modality]
    real = scratch["real_masks"]
    if real.shape[0] == 0:  # no ground truth at all in this batch: a constant total, the engine skips the step
        return LossOutput(total=fake.new_zeros((), dtype=torch.float32), terms={})
    loss = method.lsgan_discriminator(critic(real), critic(fake))
    return LossOutput(total=loss, terms={"dis_mask": loss.detach()})


def image_critic_step(method, modality: int, batch: dict, scratch: dict) -> LossOutput:
    """Image discriminator step of one modality: its real images vs the images synthesised in its style."""
    _ensure_fakes(method, batch, scratch, "fake_images")
    critic = method.image_discriminators[modality]
    real, fake = scratch["real_images"][modality], scratch["fake_images"][modality]
    loss = method.lsgan_discriminator(critic(real), critic(fake))
    return LossOutput(total=loss, terms={"dis_image": loss.detach()})


def anatomy_critic_step(method, batch: dict, scratch: dict) -> LossOutput:
    """Anatomy discriminator step (:mod:`.anatomy_critic`): the other modalities' anatomies real, the target's fake."""
    _ensure_fakes(method, batch, scratch, "fake_anatomy")
    critic = method.anatomy_discriminator
    loss = method.lsgan_discriminator(critic(scratch["real_anatomy"]), critic(scratch["fake_anatomy"]))
    return LossOutput(total=loss, terms={"dis_anatomy": loss.detach()})
