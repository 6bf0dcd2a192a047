"""Pairing head (paper Sec. III-F, method.md 1.8): weights k candidate anatomies by overlap."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from dafnet.components.keras_layers import dense
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, PairingHead, PairingOutput, Params


def soft_dice_per_candidate(target: Tensor, candidates: Tensor, smooth: float) -> Tensor:
    """(B, C, H, W) vs (B, k, C, H, W) -> (B, k) soft Dice over C, H, W."""
    target = target.unsqueeze(1)
    intersection = (target * candidates).sum(dim=(2, 3, 4))
    total = target.sum(dim=(2, 3, 4)) + candidates.sum(dim=(2, 3, 4))
    return (2 * intersection + smooth) / (total + smooth)


class DiceMLPPairingHead(PairingHead):
    """Soft Dice of each candidate vs the target -> Dense(ReLU) -> Dense(k) -> softmax (registry: dice_mlp)."""

    class Params(Params):
        hidden_units: int = Field(5, ge=1, description="width of the hidden Dense layer (ReLU)")
        smooth: float = Field(1e-12, gt=0, description="added to numerator and denominator of the soft Dice")

    def __init__(self, params: DiceMLPPairingHead.Params, facts: Facts) -> None:
        super().__init__(params, facts)
        self.num_candidates = facts.require("num_candidates")
        self.hidden = dense(self.num_candidates, params.hidden_units)
        self.logits = dense(params.hidden_units, self.num_candidates)

    def forward(self, target: Tensor, candidates: Tensor) -> PairingOutput:
        k = self.num_candidates
        if target.ndim != 4 or candidates.ndim != 5 or candidates.shape[1] != k:
            raise DafnetError(
                f"pairing head: expected target (B, C, H, W) and candidates (B, {k}, C, H, W), got "
                f"{tuple(target.shape)} and {tuple(candidates.shape)}"
            )
        if candidates.shape[0] != target.shape[0] or candidates.shape[2:] != target.shape[1:]:
            raise DafnetError(
                f"pairing head: candidates {tuple(candidates.shape)} do not match target {tuple(target.shape)}"
            )
        scores = soft_dice_per_candidate(target, candidates, self.params.smooth)
        weights = torch.softmax(self.logits(F.relu(self.hidden(scores))), dim=-1)
        return PairingOutput(weights=weights, scores=scores)
