"""Named deviation ``losses.adv_anatomy`` (off by default; docs/method.md): a critic on the anatomy factor.

The anatomy is meant to be the same whatever the modality, yet on the phantom the target's encoder draws
structures differently from the others' (a filled left ventricle against a ring), and that disagreement is
what limits the aligner (docs/results.md, "What limits the aligner"). This LS-GAN critic (the
``discriminator`` role's spec, ``critic_channels`` = the anatomy's channels) sees the anatomies of the
other modalities as real and the target's as fake; the generator term, w x mean (D(s_target) - 1)^2, pulls
the target's anatomies towards the others' distribution. It compares distributions over slices, so it
needs neither labels of the target nor aligned pairs. The term ramps in with the adversarial warm-up.
Its generator term and critic step are :mod:`.steps`' (``adv_anatomy``, :func:`.steps.anatomy_critic_step`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def anatomy_fakes(method, graph) -> Tensor:
    """The target's anatomies (B, C, H, W), the critic's fakes."""
    return graph.anatomy[method.target_index]


def anatomy_reals(method, graph) -> Tensor:
    """Every other modality's anatomies (candidate 0), stacked: the critic's reals."""
    return torch.cat([s for i, s in enumerate(graph.anatomy) if i != method.target_index])


def store(method, graph, scratch: dict) -> None:
    """Detached reals and fakes for the critic step of the same batch."""
    scratch["real_anatomy"] = anatomy_reals(method, graph).detach()
    scratch["fake_anatomy"] = anatomy_fakes(method, graph).detach()


__all__ = ["anatomy_fakes", "anatomy_reals", "store"]
