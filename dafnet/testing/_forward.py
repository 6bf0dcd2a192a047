"""The forward / backward / safetensors part shared by every network check."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dafnet.testing._contract import Contract

SEED = 1234


def isolated_rng(check: Callable) -> Callable:
    """Run a check seeded with :data:`SEED`, leaving the caller's global RNG state untouched."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            return check(*args, **kwargs)

    return wrapper


@dataclass
class Call:
    """One forward call: named inputs in positional order; which of them need gradients."""

    inputs: dict[str, Any]
    differentiable: tuple[str, ...] = ()
    note: str = ""
    """Shown in failure messages, e.g. 'modality 1' or '3 anatomies'."""

    def live(self) -> dict[str, Any]:
        """Fresh leaf copies, with ``requires_grad`` on the differentiable inputs."""
        return {name: _leaf(value, name in self.differentiable) for name, value in self.inputs.items()}


def _leaf(value: Any, grad: bool) -> Any:
    if isinstance(value, Tensor):
        copy = value.detach().clone()
        return copy.requires_grad_(grad and copy.is_floating_point())
    if isinstance(value, list):
        return [_leaf(v, grad) for v in value]
    return value


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _tensors(v)]
    return []


def expect_tensor(contract: Contract, value: Any, what: str, shape: tuple[int, ...]) -> Tensor:
    """A float32, finite tensor of exactly ``shape``."""
    contract.expect(isinstance(value, Tensor), f"{what} type", "a torch.Tensor", type(value).__name__)
    contract.expect(tuple(value.shape) == tuple(shape), f"{what} shape", tuple(shape), tuple(value.shape))
    contract.expect(value.dtype == torch.float32, f"{what} dtype", torch.float32, value.dtype)
    finite = bool(torch.isfinite(value.detach()).all())
    contract.expect(finite, f"{what} values", "finite numbers",
                    lambda: f"{int((~torch.isfinite(value.detach())).sum())} NaN/inf entries")
    return value


def max_difference(a: Tensor, b: Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
    return "0 (empty)" if a.numel() == 0 else f"{float((a - b).abs().max()):.3g}"


def expect_range(contract: Contract, value: Tensor, what: str, low: float, high: float,
                 tol: float = 1e-6) -> None:
    value = value.detach()
    lo, hi = float(value.min()), float(value.max())
    contract.expect(lo >= low - tol and hi <= high + tol, f"{what} range", f"within [{low:g}, {high:g}]",
                    f"[{lo:.6g}, {hi:.6g}]")


def expect_sums_to_one(contract: Contract, value: Tensor, dim: int, what: str, tol: float = 1e-4) -> None:
    err = float((value.detach().sum(dim=dim) - 1).abs().max())
    contract.expect(err <= tol, f"{what} sum over dim {dim}", f"1 (within {tol:g})",
                    f"max deviation {err:.3g}")


Checker = Callable[[Contract, Any, Call, nn.Module], dict[str, Tensor]]
"""(contract, forward output, call, network) -> named output tensors after checking them."""


@dataclass
class NetworkCheck:
    """Runs the calls in train mode, back-propagates, then the eval-mode safetensors round trip."""

    contract: Contract
    build: Callable[[], nn.Module]
    calls: list[Call]
    check_output: Checker
    check_eval: Checker | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def _forward(self, net: nn.Module, call: Call, inputs: dict[str, Any], checker: Checker) -> dict[str, Tensor]:
        try:
            out = net(*inputs.values())
        except Exception as exc:  # reported with the input shapes
            shapes = {k: [tuple(t.shape) for t in _tensors(v)] or v for k, v in inputs.items()}
            raise AssertionError(f"{self.contract.label}: forward{' (' + call.note + ')' if call.note else ''} "
                                 f"failed with {type(exc).__name__}: {exc} (inputs {shapes})") from exc
        return checker(self.contract, out, call, net)

    def run(self) -> tuple[nn.Module, int]:
        c = self.contract
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            net = self.build()
            c.expect(isinstance(net, nn.Module), "network type", "a torch.nn.Module", type(net).__name__)
            net.train()
            results = []
            for call in self.calls:
                inputs = call.live()
                outs = self._forward(net, call, inputs, self.check_output)
                if not self.shapes:
                    self.shapes = {k: tuple(v.shape) for k, v in outs.items()}
                results.append((call, inputs, outs))
            self._backward(net, results)
            self._round_trip(net)
        return net, sum(p.numel() for p in net.parameters() if p.requires_grad)

    def _backward(self, net: nn.Module, results: list) -> None:
        c = self.contract
        trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        wants_input_grad = any(call.differentiable for call, _, _ in results)
        if not trainable and not wants_input_grad:
            return
        gen = torch.Generator().manual_seed(SEED + 7)
        graph = [t for _, _, outs in results for t in outs.values() if t.requires_grad]
        c.expect(bool(graph), "outputs attached to the autograd graph", "outputs with grad_fn",
                 "every output is detached")
        total = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in graph)
        total.backward()
        if trainable:
            missing = [n for n, p in trainable if p.grad is None]
            c.expect(not missing, "gradients reach every trainable parameter",
                     "a gradient for each (unused parameters break distributed training)",
                     f"no gradient for {missing}")
            bad = [n for n, p in trainable if not bool(torch.isfinite(p.grad).all())]
            c.expect(not bad, "parameter gradients finite", "finite gradients", f"NaN/inf in {bad}")
            nonzero = any(bool(p.grad.abs().sum() > 0) for _, p in trainable)
            c.expect(nonzero, "parameter gradients non-zero", "some non-zero gradient", "all zero")
        for call, inputs, _ in results:
            for name in call.differentiable:
                leaves = _tensors(inputs[name])
                none = [i for i, t in enumerate(leaves) if t.grad is None]
                where = f" ({call.note})" if call.note else ""
                c.expect(not none, f"gradient reaches input {name!r}{where}",
                         "a gradient (the method trains through it)",
                         "no gradient" if len(leaves) == 1 else f"none for items {none}")

    def _eval_outputs(self, net: nn.Module) -> list[dict[str, Tensor]]:
        net.eval()
        checker = self.check_eval or self.check_output
        with torch.no_grad():
            return [self._forward(net, call, call.live(), checker) for call in self.calls]

    def _round_trip(self, net: nn.Module) -> None:
        c = self.contract
        reference = self._eval_outputs(net)
        again = self._eval_outputs(net)
        for ref, rep in zip(reference, again):
            for key in ref:
                c.expect(torch.equal(ref[key], rep[key]), f"eval-mode {key} deterministic",
                         "identical outputs for identical inputs",
                         lambda ref=ref, rep=rep, key=key: f"max difference {max_difference(ref[key], rep[key])}")
        state = net.state_dict()
        if not state:
            c.ok("no state to save (safetensors round trip not needed)")
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "component.safetensors"
            try:
                save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(path))
                loaded = load_file(str(path))
            except Exception as exc:
                raise AssertionError(f"{c.label}: state_dict to safetensors: expected save_file/load_file "
                                     f"to work, got {type(exc).__name__}: {exc}") from exc
        torch.manual_seed(SEED + 1)
        fresh = self.build()
        try:
            fresh.load_state_dict(loaded, strict=True)
        except Exception as exc:
            raise AssertionError(f"{c.label}: load_state_dict of the saved safetensors into a fresh "
                                 f"instance: expected a strict match, got {exc}") from exc
        restored = self._eval_outputs(fresh)
        for ref, new in zip(reference, restored):
            for key in ref:
                c.expect(torch.equal(ref[key], new[key]), f"safetensors round trip: {key}",
                         "identical eval-mode outputs after save_file/load_file into a fresh instance",
                         lambda ref=ref, new=new, key=key: f"max difference {max_difference(ref[key], new[key])}")
