"""Stochastic Weight Averaging: a uniform average of epoch-end snapshots of every network.

One :class:`torch.optim.swa_utils.AveragedModel` per network, updated at the end of every
epoch from ``swa_start`` (1-based epochs, so ``swa_start: 40`` averages the snapshots of
epochs 40, 41, ...). At the end of training the averaged parameters are copied into the
method's networks and :func:`recompute_batchnorm` re-estimates BatchNorm statistics with a
pass over training data *through the method* (networks take several inputs, so
``swa_utils.update_bn``'s ``model(input)`` cannot drive them). That pass also refreshes
spectral-norm power-iteration vectors for the averaged weights.

With ``train.validate_swa`` the per-epoch validation also evaluates the average (as the
original monitors its SWA copies): :func:`averaged_weights` swaps it into the networks,
recomputes BatchNorm statistics the same way, and puts every live parameter and buffer back
afterwards, so training continues from the live weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightAverager:
    """The running uniform average of each network; checkpointable (``state_dict``)."""

    def __init__(self, networks: dict[str, nn.Module], start: int | None) -> None:
        # a network without parameters (an identity aligner, say) has nothing to average, and
        # AveragedModel cannot update an empty parameter list
        self.networks = {role: net for role, net in networks.items() if any(True for _ in net.parameters())}
        self.start = start
        self.averages: dict[str, AveragedModel] = {}

    @property
    def enabled(self) -> bool:
        return self.start is not None

    @property
    def snapshots(self) -> int:
        """How many epoch-end snapshots have been averaged."""
        if not self.averages:
            return 0
        return int(next(iter(self.averages.values())).n_averaged.item())

    def _ensure(self) -> None:
        if not self.averages:
            self.averages = {role: AveragedModel(net, use_buffers=False) for role, net in self.networks.items()}

    def update(self, epoch: int) -> bool:
        """Average in the current weights if ``epoch`` (1-based) is at or after ``start``."""
        if self.start is None or epoch < self.start:
            return False
        self._ensure()
        for role, net in self.networks.items():
            self.averages[role].update_parameters(net)
        return True

    @torch.no_grad()
    def copy_to_networks(self) -> None:
        """Overwrite the networks' parameters with the averages (buffers untouched)."""
        for role, net in self.networks.items():
            for live, avg in zip(net.parameters(), self.averages[role].module.parameters()):
                live.copy_(avg)

    def state_dict(self) -> dict:
        return {"start": self.start,
                "averages": {role: avg.state_dict() for role, avg in self.averages.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.averages = {}
        if state["averages"]:
            self._ensure()
            for role, avg_state in state["averages"].items():
                self.averages[role].load_state_dict(avg_state)


def batchnorm_layers(networks: dict[str, nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for net in networks.values() for m in net.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batchnorm(networks: dict[str, nn.Module], forward_pass: Callable[[], None]) -> int:
    """Reset BatchNorm running statistics and re-estimate them as ``swa_utils.update_bn`` does
    (cumulative average: ``momentum=None``) during ``forward_pass()``, which runs the method's
    phases in training mode over training data. Returns the number of BatchNorm layers."""
    layers = batchnorm_layers(networks)
    momenta = {}
    for layer in layers:
        layer.reset_running_stats()
        momenta[layer] = layer.momentum
        layer.momentum = None
    try:
        forward_pass()
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
    return len(layers)


@contextmanager
def averaged_weights(averager: WeightAverager, networks: dict[str, nn.Module],
                     forward_pass: Callable[[], None]) -> Iterator[None]:
    """Inside the block ``networks`` hold the SWA average with BatchNorm statistics recomputed
    (:func:`recompute_batchnorm` over ``forward_pass``); on exit every parameter and buffer
    (running statistics, spectral-norm vectors) of every network is restored to its live value."""
    live = {role: {k: v.detach().clone() for k, v in net.state_dict().items()} for role, net in networks.items()}
    try:
        averager.copy_to_networks()
        recompute_batchnorm(networks, forward_pass)
        yield
    finally:
        with torch.no_grad():
            for role, net in networks.items():
                for key, tensor in net.state_dict(keep_vars=True).items():
                    tensor.copy_(live[role][key])
