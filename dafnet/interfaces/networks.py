"""Abstract network components and their typed outputs.

Every network is an ``nn.Module`` built as ``Cls(params, facts)``. Shapes use
B = batch, C = anatomy channels, H x W = image size, L = foreground classes,
k = pairing candidates, n_z = size of z. Images are (B, 1, H, W) in [-1, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor, nn

from dafnet.interfaces.base import Component, Params
from dafnet.interfaces.facts import Facts


class Network(Component, nn.Module, ABC):
    """A registered ``nn.Module``: stores its ``params`` and the ``facts`` it was built with."""

    def __init__(self, params: Params, facts: Facts) -> None:
        nn.Module.__init__(self)
        self.params = params
        self.facts = facts


# --------------------------------------------------------------------------- outputs
@dataclass
class AnatomyOutput:
    anatomy: Tensor
    """s, (B, C, H, W): binary in the forward pass, straight-through gradients."""
    probabilities: Tensor
    """The softmax before binarisation, (B, C, H, W)."""


@dataclass
class ModalityOutput:
    z: Tensor
    """(B, n_z): a sample of q(z | x, s) in training, the mean in evaluation."""
    mu: Tensor
    """(B, n_z) mean of q(z | x, s)."""
    logvar: Tensor
    """(B, n_z) log-variance of q(z | x, s)."""


@dataclass
class SegmentationOutput:
    probabilities: Tensor
    """(B, L + 1, H, W) softmax; channel 0 is the background."""
    logits: Tensor
    """(B, L + 1, H, W) before the softmax (for a numerically stable cross-entropy)."""


@dataclass
class AlignmentOutput:
    warped: Tensor
    """(B, C, H, W) the moving anatomy resampled onto the fixed anatomy's grid."""
    grid: Tensor
    """(B, H, W, 2) sampling locations in [-1, 1] (x, y), as ``grid_sample`` takes them."""
    parameters: Tensor
    """The transform's own parameters, e.g. (B, 25, 2) TPS control-point offsets."""


@dataclass
class PairingOutput:
    weights: Tensor
    """(B, k) non-negative weights summing to 1 over the candidates."""
    scores: Tensor
    """(B, k) the features the weights were computed from (soft Dice per candidate)."""


# --------------------------------------------------------------------------- kinds
class AnatomyEncoder(Network):
    """x_i -> s_i. May hold per-modality weights; ``modality`` is the index in facts.modalities."""

    @property
    @abstractmethod
    def out_channels(self) -> int:
        """C, the anatomy channels; declared to later components as ``anatomy_channels``."""

    def declared_facts(self) -> dict:
        return {"anatomy_channels": self.out_channels}

    @abstractmethod
    def forward(self, image: Tensor, modality: int) -> AnatomyOutput: ...


class ModalityEncoder(Network):
    """(x, s) -> q(z | x, s)."""

    @property
    @abstractmethod
    def z_dim(self) -> int:
        """n_z; declared to later components as ``z_dim``."""

    def declared_facts(self) -> dict:
        return {"z_dim": self.z_dim}

    @abstractmethod
    def forward(self, image: Tensor, anatomy: Tensor) -> ModalityOutput: ...


class Segmentor(Network):
    """s -> mask over L + 1 channels."""

    @abstractmethod
    def forward(self, anatomy: Tensor) -> SegmentationOutput: ...


class Aligner(Network):
    """(moving anatomy, fixed anatomy) -> moving anatomy warped onto the fixed one."""

    @abstractmethod
    def forward(self, moving: Tensor, fixed: Tensor) -> AlignmentOutput: ...


class Fuser(Network):
    """Combines the fixed anatomy with the warped anatomies of the other modalities."""

    @abstractmethod
    def forward(self, anatomies: list[Tensor]) -> Tensor:
        """``anatomies[0]`` is the fixed one; returns (B, C, H, W). Any number >= 1."""


class Decoder(Network):
    """(s, z) -> image (B, 1, H, W) in [-1, 1]."""

    @abstractmethod
    def forward(self, anatomy: Tensor, z: Tensor) -> Tensor: ...


class Discriminator(Network):
    """A critic: (B, channels, H, W) -> (B, 1) unbounded score (LS-GAN, no sigmoid).

    One class serves mask and image discriminators: the method sets
    ``facts.critic_channels`` (L for masks, 1 for images) before building each.
    """

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor: ...


class PairingHead(Network):
    """Scores k candidate warped anatomies against a target anatomy."""

    @abstractmethod
    def forward(self, target: Tensor, candidates: Tensor) -> PairingOutput:
        """target (B, C, H, W), candidates (B, k, C, H, W)."""


class LossTerm(Component, nn.Module, ABC):
    """One named loss term. Returns a scalar tensor (already reduced)."""

    def __init__(self, params: Params, facts: Facts) -> None:
        nn.Module.__init__(self)
        self.params = params
        self.facts = facts

    @abstractmethod
    def forward(self, *args: Tensor, **kwargs: Tensor) -> Tensor: ...


__all__ = [
    "AlignmentOutput",
    "Aligner",
    "AnatomyEncoder",
    "AnatomyOutput",
    "Decoder",
    "Discriminator",
    "Fuser",
    "LossTerm",
    "ModalityEncoder",
    "ModalityOutput",
    "Network",
    "PairingHead",
    "PairingOutput",
    "SegmentationOutput",
    "Segmentor",
]
