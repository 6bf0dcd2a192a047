"""Contract checks of the network kinds (every one an ``nn.Module`` built as ``Cls(params, facts)``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor

from dafnet.interfaces import (
    AlignmentOutput,
    AnatomyOutput,
    Facts,
    ModalityOutput,
    PairingOutput,
    SegmentationOutput,
)
from dafnet.testing._contract import Contract, ContractReport, build, report, start
from dafnet.testing._forward import (
    SEED,
    Call,
    NetworkCheck,
    expect_range,
    expect_sums_to_one,
    expect_tensor,
    isolated_rng,
    max_difference,
)

BATCH = 2


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(SEED + 3)


def random_images(facts: Facts, gen: torch.Generator, batch: int = BATCH) -> Tensor:
    """(B, image_channels, H, W) uniform in [-1, 1]."""
    h, w = facts.require("image_size")
    return torch.rand(batch, facts.image_channels, h, w, generator=gen) * 2 - 1


def random_anatomy(facts: Facts, gen: torch.Generator, batch: int = BATCH, channels: int | None = None) -> Tensor:
    """(B, C, H, W) binary, exactly one channel on per pixel (what an anatomy encoder emits)."""
    h, w = facts.require("image_size")
    c = channels or facts.require("anatomy_channels")
    index = torch.randint(0, c, (batch, h, w), generator=gen)
    return F.one_hot(index, c).permute(0, 3, 1, 2).float()


def random_soft_anatomy(facts: Facts, gen: torch.Generator, batch: int = BATCH) -> Tensor:
    """(B, C, H, W) in [0, 1] (a warped anatomy is soft)."""
    h, w = facts.require("image_size")
    return torch.rand(batch, facts.require("anatomy_channels"), h, w, generator=gen)


def _typed(c: Contract, out: Any, cls: type, call: Call) -> None:
    where = f" ({call.note})" if call.note else ""
    c.expect(isinstance(out, cls), f"output type{where}", cls.__name__, type(out).__name__)


def _run(kind: str, name_or_class, params, facts, make_calls, check_output, check_eval=None,
         after_build=None, required_params: tuple[str, ...] = ()) -> ContractReport:
    contract, name, cls, params, facts = start(kind, name_or_class, params, facts, required_params)

    def make():
        return build(contract, cls, params, facts)

    probe = make()
    if after_build is not None:
        after_build(contract, probe, facts)
    calls = make_calls(probe, facts, _gen())
    del probe
    check = NetworkCheck(contract, make, calls, check_output, check_eval)
    _, trainable = check.run()
    return report(contract, name, cls, params, facts, check.shapes, trainable)


# --------------------------------------------------------------------------- anatomy encoder
@isolated_rng
def check_anatomy_encoder(name_or_class, params: dict | BaseModel | None = None,
                          facts: Facts | None = None, *, required_params: tuple[str, ...] = ()
                          ) -> ContractReport:
    """x -> AnatomyOutput: binary s with at most one channel on, softmax probabilities; every modality."""

    def after_build(c, net, f):
        channels = net.out_channels
        c.expect(isinstance(channels, int) and channels >= 1, "out_channels", "an int >= 1", channels)
        declared = net.declared_facts().get("anatomy_channels")
        c.expect(declared == channels, "declared anatomy_channels", channels, declared)

    def calls(net, f, gen):
        images = random_images(f, gen)
        return [Call({"image": images, "modality": i}, note=f"modality {i} {m!r}")
                for i, m in enumerate(f.require("modalities"))]

    def check(c, out, call, net):
        _typed(c, out, AnatomyOutput, call)
        h, w = call.inputs["image"].shape[-2:]
        shape = (BATCH, net.out_channels, h, w)
        s = expect_tensor(c, out.anatomy, "anatomy", shape)
        p = expect_tensor(c, out.probabilities, "probabilities", shape)
        binary = bool(((s == 0) | (s == 1)).all())  # comparisons do not track gradients
        c.expect(binary, "anatomy binary", "values in {0, 1}",
                 lambda: f"{int(((s != 0) & (s != 1)).sum())} other values, e.g. {s[(s != 0) & (s != 1)][:3].tolist()}")
        on = int(s.detach().sum(dim=1).max())
        c.expect(on <= 1, "anatomy channels on per pixel", "at most 1", on)
        expect_range(c, p, "probabilities", 0.0, 1.0)
        expect_sums_to_one(c, p, 1, "probabilities")
        return {"anatomy": s, "probabilities": p}

    return _run("anatomy_encoder", name_or_class, params, facts, calls, check, after_build=after_build,
                required_params=required_params)


# --------------------------------------------------------------------------- modality encoder
@isolated_rng
def check_modality_encoder(name_or_class, params=None, facts=None, *, required_params=()) -> ContractReport:
    """(x, s) -> ModalityOutput (B, z_dim) each; z is the mean in eval mode."""

    def after_build(c, net, f):
        declared = net.declared_facts().get("z_dim")
        c.expect(isinstance(net.z_dim, int) and net.z_dim >= 1, "z_dim", "an int >= 1", net.z_dim)
        c.expect(declared == net.z_dim, "declared z_dim", net.z_dim, declared)

    def calls(net, f, gen):
        return [Call({"image": random_images(f, gen), "anatomy": random_anatomy(f, gen)},
                     differentiable=("image", "anatomy"))]

    def check(c, out, call, net):
        _typed(c, out, ModalityOutput, call)
        shape = (BATCH, net.z_dim)
        return {k: expect_tensor(c, getattr(out, k), k, shape) for k in ("z", "mu", "logvar")}

    def check_eval(c, out, call, net):
        tensors = check(c, out, call, net)
        c.expect(torch.equal(tensors["z"], tensors["mu"]), "eval-mode z", "z == mu (the mean)",
                 lambda: f"max |z - mu| {max_difference(tensors['z'], tensors['mu'])}")
        return tensors

    return _run("modality_encoder", name_or_class, params, facts, calls, check, check_eval, after_build,
                required_params=required_params)


# --------------------------------------------------------------------------- segmentor
@isolated_rng
def check_segmentor(name_or_class, params=None, facts=None, *, required_params=()) -> ContractReport:
    """s -> SegmentationOutput over L + 1 channels; probabilities = softmax(logits)."""

    def calls(net, f, gen):
        return [Call({"anatomy": random_anatomy(f, gen)}, differentiable=("anatomy",))]

    def check(c, out, call, net):
        _typed(c, out, SegmentationOutput, call)
        f = net.facts
        h, w = f.require("image_size")
        shape = (BATCH, f.require("num_classes") + 1, h, w)
        p = expect_tensor(c, out.probabilities, "probabilities", shape)
        logits = expect_tensor(c, out.logits, "logits", shape)
        expect_range(c, p, "probabilities", 0.0, 1.0)
        expect_sums_to_one(c, p, 1, "probabilities")
        err = float((torch.softmax(logits.detach(), dim=1) - p.detach()).abs().max())
        c.expect(err <= 1e-5, "probabilities vs logits", "softmax(logits, dim=1)", f"max difference {err:.3g}")
        return {"probabilities": p, "logits": logits}

    return _run("segmentor", name_or_class, params, facts, calls, check, required_params=required_params)


# --------------------------------------------------------------------------- aligner
@isolated_rng
def check_aligner(name_or_class, params=None, facts=None, *, required_params=()) -> ContractReport:
    """(moving, fixed) -> AlignmentOutput: warped (B, C, H, W), grid (B, H, W, 2)."""

    def calls(net, f, gen):
        return [Call({"moving": random_anatomy(f, gen), "fixed": random_anatomy(f, gen)},
                     differentiable=("moving",))]

    def check(c, out, call, net):
        _typed(c, out, AlignmentOutput, call)
        b, ch, h, w = call.inputs["moving"].shape
        warped = expect_tensor(c, out.warped, "warped", (b, ch, h, w))
        grid = expect_tensor(c, out.grid, "grid", (b, h, w, 2))
        par = out.parameters
        c.expect(isinstance(par, torch.Tensor) and par.shape[:1] == (b,), "parameters batch dimension",
                 f"(B={b}, ...)", tuple(par.shape) if isinstance(par, torch.Tensor) else type(par).__name__)
        expect_tensor(c, par, "parameters", tuple(par.shape))
        return {"warped": warped, "grid": grid, "parameters": par}

    return _run("aligner", name_or_class, params, facts, calls, check, required_params=required_params)


# --------------------------------------------------------------------------- fuser
@isolated_rng
def check_fuser(name_or_class, params=None, facts=None, *, required_params=()) -> ContractReport:
    """list of 1, 2 and 3 anatomies -> (B, C, H, W)."""

    def calls(net, f, gen):
        return [Call({"anatomies": [random_soft_anatomy(f, gen) for _ in range(n)]},
                     differentiable=("anatomies",), note=f"{n} anatomies") for n in (1, 2, 3)]

    def check(c, out, call, net):
        shape = tuple(call.inputs["anatomies"][0].shape)
        return {f"fused ({call.note})": expect_tensor(c, out, f"fused ({call.note})", shape)}

    return _run("fuser", name_or_class, params, facts, calls, check, required_params=required_params)


# --------------------------------------------------------------------------- decoder
@isolated_rng
def check_decoder(name_or_class, params=None, facts=None, *, required_params=()) -> ContractReport:
    """(s, z) -> image (B, image_channels, H, W) in [-1, 1]."""

    def calls(net, f, gen):
        z = torch.randn(BATCH, f.require("z_dim"), generator=gen)
        return [Call({"anatomy": random_anatomy(f, gen), "z": z}, differentiable=("anatomy", "z"))]

    def check(c, out, call, net):
        b, _, h, w = call.inputs["anatomy"].shape
        image = expect_tensor(c, out, "image", (b, net.facts.image_channels, h, w))
        expect_range(c, image, "image", -1.0, 1.0)
        return {"image": image}

    return _run("decoder", name_or_class, params, facts, calls, check, required_params=required_params)


# --------------------------------------------------------------------------- discriminator
@isolated_rng
def check_discriminator(name_or_class, params=None, facts=None, *, required_params=()) -> ContractReport:
    """(B, critic_channels, H, W) -> (B, 1) unbounded scores; gradients reach the input."""

    def calls(net, f, gen):
        h, w = f.require("image_size")
        x = torch.rand(BATCH, f.require("critic_channels"), h, w, generator=gen) * 2 - 1
        return [Call({"x": x}, differentiable=("x",))]

    def check(c, out, call, net):
        return {"score": expect_tensor(c, out, "score", (BATCH, 1))}

    return _run("discriminator", name_or_class, params, facts, calls, check, required_params=required_params)


# --------------------------------------------------------------------------- pairing head
@isolated_rng
def check_pairing_head(name_or_class, params=None, facts=None, *, required_params=()) -> ContractReport:
    """(target, k candidates) -> PairingOutput: (B, k) non-negative weights summing to 1."""

    def calls(net, f, gen):
        k = f.num_candidates
        h, w = f.require("image_size")
        cands = torch.rand(BATCH, k, f.require("anatomy_channels"), h, w, generator=gen)
        return [Call({"target": random_anatomy(f, gen), "candidates": cands},
                     differentiable=("candidates",))]

    def check(c, out, call, net):
        _typed(c, out, PairingOutput, call)
        k = call.inputs["candidates"].shape[1]
        weights = expect_tensor(c, out.weights, "weights", (BATCH, k))
        scores = expect_tensor(c, out.scores, "scores", (BATCH, k))
        expect_range(c, weights, "weights", 0.0, 1.0)
        expect_sums_to_one(c, weights, 1, "weights")
        return {"weights": weights, "scores": scores}

    return _run("pairing_head", name_or_class, params, facts, calls, check, required_params=required_params)
