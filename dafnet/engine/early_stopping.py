"""Early stopping on the method's ``monitor`` (lower is better), and the best epoch's weights."""

from __future__ import annotations

import math

import torch
from torch import nn


class EarlyStopping:
    """Stops when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int | None, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.best_epoch: int | None = None

    def update(self, epoch: int, value: float) -> bool:
        """Record a validation result; True when it is a new best (NaN never is)."""
        if math.isfinite(value) and value < self.best - self.min_delta:
            self.best, self.best_epoch = float(value), epoch
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        if self.patience is None:
            return False
        return epoch - (self.best_epoch or 0) >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = float(state["best"]), state["best_epoch"]


class BestWeights:
    """A CPU copy of every network's state at the best validation epoch."""

    def __init__(self, networks: dict[str, nn.Module]) -> None:
        self.networks = networks
        self.epoch: int | None = None
        self.value = math.inf
        """The monitor of the weights kept (lower is better)."""
        self.weights: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def available(self) -> bool:
        return self.epoch is not None

    def improves(self, value: float) -> bool:
        """Whether ``value`` is strictly better than the monitor of the weights kept (NaN never is)."""
        return math.isfinite(value) and value < self.value

    def capture(self, epoch: int, value: float) -> None:
        self.epoch, self.value = epoch, float(value)
        self.weights = {role: {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
                        for role, net in self.networks.items()}

    def restore(self) -> None:
        for role, net in self.networks.items():
            net.load_state_dict(self.weights[role], strict=True)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "value": self.value, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.weights = state["epoch"], state["weights"]
        self.value = float(state.get("value", math.inf))  # a state saved before the value was kept: any is better
