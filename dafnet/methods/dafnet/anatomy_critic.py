"""Named deviation ``losses.adv_anatomy`` (off by default; docs/method.md): a critic on the anatomy factor.

The anatomy is meant to be the same whatever the modality, yet on the phantom the target's encoder draws
structures differently from the others' (a filled left ventricle against a ring), and that disagreement is
what limits the aligner (docs/results.md, "What limits the aligner"). This LS-GAN critic (the
``discriminator`` role's spec, ``critic_channels`` = the anatomy's channels) sees the anatomies of the
other modalities as real and the target's as fake; the generator term, w x mean (D(s_target) - 1)^2, pulls
the target's anatomies towards the others' distribution. It compares distributions over slices, so it
needs neither labels of the target nor aligned pairs. The term ramps in with the adversarial warm-up.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dafnet.interfaces import LossOutput


def anatomy_fakes(method, graph) -> Tensor:
    """The target's anatomies (B, C, H, W), the critic's fakes."""
    return graph.anatomy[method.target_index]


def anatomy_reals(method, graph) -> Tensor:
    """Every other modality's anatomies (candidate 0), stacked: the critic's reals."""
    return torch.cat([s for i, s in enumerate(graph.anatomy) if i != method.target_index])


def generator_term(method, graph) -> Tensor:
    """mean (D(s_target) - 1)^2 (the critic's parameters frozen by the generator step)."""
    scores = method.anatomy_discriminator(anatomy_fakes(method, graph)).float()
    return (scores - 1).pow(2).mean()


def store(method, graph, scratch: dict) -> None:
    """Detached reals and fakes for the critic step of the same batch."""
    scratch["real_anatomy"] = anatomy_reals(method, graph).detach()
    scratch["fake_anatomy"] = anatomy_fakes(method, graph).detach()


def critic_step(method, batch: dict, scratch: dict, ensure) -> LossOutput:
    """The anatomy critic's LS-GAN step: the other modalities' anatomies real, the target's fake.
    ``ensure(method, batch, scratch, key)`` runs the generator forward when the scratch has no fakes."""
    ensure(method, batch, scratch, "fake_anatomy")
    critic = method.anatomy_discriminator
    loss = method.lsgan_discriminator(critic(scratch["real_anatomy"]), critic(scratch["fake_anatomy"]))
    return LossOutput(total=loss, terms={"dis_anatomy": loss.detach()})


__all__ = ["anatomy_fakes", "anatomy_reals", "critic_step", "generator_term", "store"]
