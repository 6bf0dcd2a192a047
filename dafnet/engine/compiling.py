"""``train.compile``: ``torch.compile`` of the method's networks, in place (docs/engine.md, "The fast path").

Each network is compiled with :meth:`torch.nn.Module.compile`, which sets the module's compiled call and
changes nothing else: the object, its class, its ``state_dict`` keys (no ``_orig_mod.`` prefix) and the
references the method holds stay the same, so checkpoints, SWA, the best weights, exports and resumes see
an ordinary module. Only a network's ``forward`` is compiled: a method calling other methods of a network
runs them eagerly, and so does a network whose ``forward`` is torch.nn's own (``nn.Sequential``, say):
Dynamo skips torch.nn's frames, so :meth:`~torch.nn.Module.compile` changes nothing there (torch 2.13;
the training session names such roles). A deep copy of a compiled network (SWA's ``AveragedModel``)
shares the original's compiled call; the engine only reads those copies' parameters, never calls them.
"""

from __future__ import annotations

import torch
from torch import nn

from dafnet.errors import DafnetError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
"""The ``torch.compile`` modes ``train.compile`` accepts besides ``off``."""

RECOMPILE_LIMIT = 64
"""The least ``torch._dynamo.config.recompile_limit`` a compiled run gets (torch's default is 8).
Dynamo keeps up to that many compiled versions per code object, and a network's ``forward`` is one
code object shared by every instance of its class (DAFNet's mask critic and its image critics are
one class). Each sees a bounded set of states, each compiled once: grad mode (training, evaluation,
the SWA BatchNorm pass), which parameters require gradients (the freezer: generator or critic
phase), the inputs' requires_grad and channels (mask or image critic), the modality index (per-modality
layers), the batch size (static, then dynamic), and each spectral-norm instance's own class. The tiny
DAFNet of the tests reaches 8 on its critics' and anatomy encoder's ``forward`` within 3 epochs; past
the limit Dynamo silently runs those calls eagerly (a warning in the log), which would make the fast
path slow without an error. 64 covers them with room (tests/test_compile.py counts them)."""


def _probe(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 2.0 + 1.0


def check_compiler(mode: str, device: torch.device) -> None:
    """Compile and run a tiny function with ``mode`` on ``device``, so that a missing tool chain (no
    C++ compiler for the CPU, no triton for the GPU, a Python that Dynamo does not support) is one
    clear error before training starts, not a traceback from inside the first phase."""
    try:
        torch.compile(_probe, mode=mode)(torch.ones(4, device=device))
    except Exception as error:  # any failure of the compiler's tool chain is re-raised as a DafnetError
        first = (str(error).strip().splitlines() or [""])[0][:300]
        tool = ("triton (pip install triton)" if device.type == "cuda"
                else "a C++ compiler (g++ or clang++ on the PATH, or named by CXX)")
        raise DafnetError(
            f"train.compile: {mode!r}: torch.compile does not work on {device.type} here "
            f"({type(error).__name__}: {first})",
            hint=f"install what torch.compile needs for {device.type}, {tool}, or train eagerly with "
                 "train.compile=off") from error


def runs_eagerly(module: nn.Module) -> bool:
    """Whether :meth:`~torch.nn.Module.compile` leaves ``module`` eager: its ``forward`` is torch.nn's
    own (``nn.Sequential``, or a subclass that does not define one), whose frames Dynamo skips."""
    return type(module).forward.__module__.startswith("torch.")


def compile_networks(networks: dict[str, nn.Module], mode: str, device: torch.device) -> list[str]:
    """Compile every network in place with ``torch.compile(mode=mode)`` (after
    :func:`check_compiler`); ``off`` compiles nothing. Returns the roles that still run eagerly
    (:func:`runs_eagerly`), for the caller to say so."""
    if mode == "off":
        return []
    if mode not in COMPILE_MODES:
        raise DafnetError(f"train.compile: unknown mode {mode!r}",
                          hint=f"use off or one of {', '.join(COMPILE_MODES)}")
    check_compiler(mode, device)
    import torch._dynamo

    dynamo_config = torch._dynamo.config
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    for net in networks.values():
        net.compile(mode=mode)
    return [role for role, net in networks.items() if runs_eagerly(net)]


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` was compiled in place (:meth:`torch.nn.Module.compile`)."""
    return getattr(module, "_compiled_call_impl", None) is not None


__all__ = ["COMPILE_MODES", "RECOMPILE_LIMIT", "check_compiler", "compile_networks", "is_compiled", "runs_eagerly"]
