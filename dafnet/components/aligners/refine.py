"""Instance optimisation of an aligner's output at inference (a named deviation, off by default).

The network predicts the warp parameters of a pair in one pass; its training objective for them, the
anatomy alignment term (mean |Align(s_m -> s_t) - s_t|, docs/method.md), can then be lowered further for
that pair alone by a few gradient steps on the parameters themselves, starting from the prediction, the
networks untouched. Learned registration does this at test time ("instance optimisation") because an
amortised prediction stops short of each pair's own optimum. It needs no labels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def refine_parameters(parameters: Tensor, warp: Callable[[Tensor, Tensor], Tensor], moving: Tensor,
                      fixed: Tensor, steps: int, lr: float) -> Tensor:
    """``steps`` Adam steps (learning rate ``lr``) on ``parameters`` (B, ...) from their value, lowering each
    sample's mean |warp(moving, parameters) - fixed| (the sum over samples, so each sample's parameters move
    as if alone); returns them detached. Runs with gradients on also inside ``torch.no_grad()``."""
    moving, fixed = moving.detach(), fixed.detach()
    with torch.enable_grad(), torch.autocast(device_type=moving.device.type, enabled=False):
        current = parameters.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([current], lr=lr)
        for _ in range(steps):
            per_sample = (warp(moving, current) - fixed).abs().flatten(1).mean(1)
            optimiser.zero_grad(set_to_none=True)
            per_sample.sum().backward()
            optimiser.step()
    return current.detach()


__all__ = ["refine_parameters"]
