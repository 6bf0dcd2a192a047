"""DAFNet's ``summary``: one batch-1 forward of every role, each output checked against its kind's
contract (:func:`dafnet.methods.roles.checked`), with the exact trainable parameter counts.
The engine runs it before training, so a plugin that breaks its contract is named at once."""

from __future__ import annotations

import torch

from dafnet.components.keras_layers import count_trainable
from dafnet.interfaces import RoleSummary
from dafnet.methods.roles import checked, shape_text


def role_summary(method) -> list[RoleSummary]:
    """The rows of ``method.summary()``; the caller puts the method in eval mode without gradients."""
    facts = method.facts
    h, w = facts.require("image_size")
    p = next(method.parameters())
    x = torch.zeros(1, facts.image_channels, h, w, device=p.device, dtype=p.dtype)
    anatomy = (1, facts.require("anatomy_channels"), h, w)

    def name(role: str) -> str:
        return method.component(role).name

    s = checked("anatomy encoder", name("anatomy_encoder"), method.anatomy_encoder(x, 0), anatomy, "anatomy")
    z = checked("modality encoder", name("modality_encoder"), method.modality_encoder(x, s), (1, method.z_dim), "z")
    outputs = {
        "anatomy_encoder": s, "modality_encoder": z,
        "segmentor": checked("segmentor", name("segmentor"), method.segmentor(s),
                             (1, method.num_classes + 1, h, w), "probabilities"),
        "aligner": checked("aligner", name("aligner"), method.aligner(s, s), anatomy, "warped"),
        "fuser": checked("fuser", name("fuser"), method.fuser([s, s]), anatomy),
        "decoder": checked("decoder", name("decoder"), method.decoder(s, z), (1, facts.image_channels, h, w)),
    }
    rows = [RoleSummary(role, name(role), shape_text(out), count_trainable(getattr(method, role)))
            for role, out in outputs.items()]
    return rows + _critic_rows(method, x, name("discriminator")) + _pairing_rows(method, s, name("pairing_head"))


def _critic_rows(method, x, critic: str) -> list[RoleSummary]:
    rows = []
    if method.mask_discriminator is not None:
        h, w = x.shape[-2:]
        masks = torch.zeros(1, method.num_classes, h, w, device=x.device, dtype=x.dtype)
        score = method.mask_discriminator(masks)
        checked("mask discriminator", critic, score, None)
        rows.append(RoleSummary("mask_discriminator", critic, shape_text(score),
                                count_trainable(method.mask_discriminator)))
    if method.anatomy_discriminator is not None:
        h, w = x.shape[-2:]
        anatomy = torch.zeros(1, method.facts.anatomy_channels, h, w, device=x.device, dtype=x.dtype)
        score = method.anatomy_discriminator(anatomy)
        checked("anatomy discriminator", critic, score, None)
        rows.append(RoleSummary("anatomy_discriminator", critic, shape_text(score),
                                count_trainable(method.anatomy_discriminator)))
    for m, net in zip(method.modalities, method.image_discriminators or []):
        score = net(x)
        checked("image discriminator", critic, score, None)
        rows.append(RoleSummary(f"image_discriminator_{m}", critic, shape_text(score), count_trainable(net)))
    return rows


def _pairing_rows(method, s, component: str) -> list[RoleSummary]:
    if method.pairing_head is None:
        return []
    k = method.num_candidates
    out = checked("pairing head", component, method.pairing_head(s, s.unsqueeze(1).expand(-1, k, -1, -1, -1)),
                  (1, k), "weights")
    return [RoleSummary("pairing_head", component, shape_text(out), count_trainable(method.pairing_head))]


__all__ = ["role_summary"]
