"""Gradient averaging and buffer broadcast across processes, per phase group.

The engine does not rely on DDP's backward hooks: a phase freezes the networks of other
groups, calls networks several times and may leave some parameters of its own group unused
(e.g. per-modality weights). DDP's reducer cannot follow that without fragile settings, so
every phase runs under ``no_sync`` and the engine averages the group's gradients itself,
once per optimizer step, in one flat all-reduce per dtype. The result is the gradient of the
mean loss over the global batch, exactly what DDP computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from accelerate.utils import broadcast
from torch import nn


@contextmanager
def no_sync(modules: Iterable[nn.Module]) -> Iterator[None]:
    """``no_sync`` of every DDP-wrapped module (a no-op for plain modules)."""
    with ExitStack() as stack:
        for module in modules:
            if isinstance(module, nn.parallel.DistributedDataParallel):
                stack.enter_context(module.no_sync())
        yield


def average_gradients(accelerator, params: list[nn.Parameter]) -> None:
    """Average ``.grad`` over processes. A parameter without a gradient on every process keeps
    ``None`` (Adam then skips it, as in a one-process run); one with a gradient somewhere gets
    zeros where it has none before averaging."""
    if accelerator.num_processes == 1 or not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=accelerator.device)
    has = accelerator.reduce(has, reduction="sum").tolist()
    live = [p for p, h in zip(params, has) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in live:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        flat = accelerator.reduce(flat, reduction="mean")
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def broadcast_buffers(accelerator, networks: Iterable[nn.Module]) -> None:
    """Every process takes the main process's buffers (BatchNorm statistics), as DDP does."""
    if accelerator.num_processes == 1:
        return
    buffers = [b for net in networks for b in net.buffers()]
    if buffers:
        broadcast(buffers, from_process=0)
