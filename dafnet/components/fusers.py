"""Fusers: combine the fixed anatomy with the other modalities' warped anatomies (method.md 1.5)."""

from __future__ import annotations

import torch
from torch import Tensor

from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Fuser, Params


def _stacked(anatomies: list[Tensor], who: str) -> Tensor:
    if len(anatomies) == 0:
        raise DafnetError(f"{who}: needs at least one anatomy (the fixed one)")
    shape = anatomies[0].shape
    for i, a in enumerate(anatomies):
        if a.shape != shape:
            raise DafnetError(
                f"{who}: anatomy {i} has shape {tuple(a.shape)}, the fixed one {tuple(shape)}",
                hint="warp every anatomy onto the fixed anatomy's grid before fusing",
            )
    return torch.stack(list(anatomies), dim=0)


class MaxFuser(Fuser):
    """Pixel-wise maximum over all anatomies (the paper's fusion; registry: max)."""

    class Params(Params):
        pass

    def __init__(self, params: MaxFuser.Params, facts: Facts) -> None:
        super().__init__(params, facts)

    def forward(self, anatomies: list[Tensor]) -> Tensor:
        return _stacked(anatomies, "max fuser").amax(dim=0)


class MeanFuser(Fuser):
    """Pixel-wise mean over all anatomies (method.md's alternative; registry: mean).

    Where the anatomies disagree, max switches on the channels of both and the segmentor
    (trained on single anatomies only) reads foreground there; the mean halves both instead.
    On the phantom at 0% target labels it beat max on every validation split tried
    (docs/results.md). Fusion gets no training loss: ``dafnet evaluate RUN
    model.fuser.name=mean`` tries it on a model trained with max.
    """

    class Params(Params):
        pass

    def __init__(self, params: MeanFuser.Params, facts: Facts) -> None:
        super().__init__(params, facts)

    def forward(self, anatomies: list[Tensor]) -> Tensor:
        return _stacked(anatomies, "mean fuser").mean(dim=0)
