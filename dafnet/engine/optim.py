"""One Adam optimizer per method group, and freezing every other group during a phase."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dafnet.assemble import check_lr_scale
from dafnet.errors import DafnetError


def unique_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The parameters of ``modules`` in order, each once (shared parameters appear once)."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def group_parameters(networks: dict[str, nn.Module], roles: list[str]) -> list[nn.Parameter]:
    return unique_parameters(networks[r] for r in roles)


def check_contract(method_name: str, networks: dict[str, nn.Module], groups: dict[str, list[str]],
                   phases: list, streams: dict) -> None:
    """Every group names known roles, every phase a known group and stream."""
    for group, roles in groups.items():
        unknown = [r for r in roles if r not in networks]
        if unknown:
            raise DafnetError(
                f"method {method_name!r}: optimizer group {group!r} names unknown roles {unknown}",
                hint=f"networks() returns: {', '.join(networks)}")
        if not roles:
            raise DafnetError(f"method {method_name!r}: optimizer group {group!r} has no roles")
    if not phases:  # a method without training (a baseline such as copy): evaluated only
        return
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise DafnetError(f"method {method_name!r}: phase names repeat: {names}")
    for phase in phases:
        if phase.group not in groups:
            raise DafnetError(f"method {method_name!r}: phase {phase.name!r} trains unknown group "
                              f"{phase.group!r}", hint=f"groups: {', '.join(groups)}")
        if phase.stream not in streams:
            raise DafnetError(f"method {method_name!r}: phase {phase.name!r} reads unknown stream "
                              f"{phase.stream!r}", hint=f"train_streams() returns: {', '.join(streams)}")


def fused_adam(params: list[nn.Parameter], torch_version: str | None = None) -> bool:
    """Whether Adam should use its fused CUDA kernel for ``params``: when every one is a floating-point
    CUDA tensor and torch has the kernel (torch >= 2.4, which dafnet requires, does). It is the same
    algorithm as the default (foreach) Adam, in one kernel launch per step instead of a few per
    parameter list. Elsewhere (the CPU, a mix of devices) torch's default implementation."""
    from torch.torch_version import TorchVersion

    version = TorchVersion(torch.__version__ if torch_version is None else torch_version)
    return (bool(params) and version >= (2, 4)
            and all(p.device.type == "cuda" and p.is_floating_point() for p in params))


def build_optimizers(networks: dict[str, nn.Module], groups: dict[str, list[str]],
                     train) -> dict[str, torch.optim.Adam]:
    """``train`` is the recipe's ``train`` section (lr, betas, weight_decay, lr_scale); fused Adam on CUDA
    (:func:`fused_adam`). A role named in ``train.lr_scale`` gets its own Adam parameter group at
    lr x its factor (a parameter shared by roles takes the first role's)."""
    scale = dict(getattr(train, "lr_scale", None) or {})
    check_lr_scale(networks, scale)
    optimizers = {}
    for group, roles in groups.items():
        params = [p for p in group_parameters(networks, roles) if p.requires_grad]
        if not params:
            raise DafnetError(f"optimizer group {group!r} ({', '.join(roles)}) has no trainable parameters")
        optimizers[group] = torch.optim.Adam(_scaled_groups(networks, roles, params, scale, train.lr), lr=train.lr,
                                             betas=tuple(train.betas), weight_decay=train.weight_decay,
                                             fused=True if fused_adam(params) else None)
    return optimizers


def _scaled_groups(networks: dict[str, nn.Module], roles: list[str], params: list[nn.Parameter],
                   scale: dict[str, float], lr: float) -> list[nn.Parameter] | list[dict]:
    """``params`` as one list when no role of the group is scaled (a factor of 1 is none; the optimizer's state
    dict then stays as it always was), else Adam parameter groups: each scaled role's, then the rest at ``lr``."""
    scaled = [r for r in roles if scale.get(r, 1.0) != 1.0]
    if not scaled:
        return params
    trainable = {id(p) for p in params}
    taken: set[int] = set()
    out: list[dict] = []
    for role in scaled:
        own = [p for p in networks[role].parameters() if id(p) in trainable and id(p) not in taken]
        taken.update(id(p) for p in own)
        if own:
            out.append({"params": own, "lr": lr * scale[role]})
    rest = [p for p in params if id(p) not in taken]
    if rest:
        out.append({"params": rest, "lr": lr})
    return out


class Freezer:
    """Makes only one group's parameters require gradients, then restores every flag."""

    def __init__(self, networks: dict[str, nn.Module], groups: dict[str, list[str]]) -> None:
        self._params = unique_parameters(networks.values())
        self._original = {id(p): p.requires_grad for p in self._params}
        self._members = {g: {id(p) for p in group_parameters(networks, roles)}
                         for g, roles in groups.items()}

    def trainable(self, group: str) -> list[nn.Parameter]:
        members = self._members[group]
        return [p for p in self._params if id(p) in members and self._original[id(p)]]

    @contextmanager
    def only(self, group: str) -> Iterator[None]:
        members = self._members[group]
        try:
            for p in self._params:
                p.requires_grad_(self._original[id(p)] and id(p) in members)
            yield
        finally:
            for p in self._params:
                p.requires_grad_(self._original[id(p)])
