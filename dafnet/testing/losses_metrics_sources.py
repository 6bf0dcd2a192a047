"""Contract checks of the kinds that are not plain networks: loss terms, metrics, data sources."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor

from dafnet.interfaces import DataSource, Facts, MetricInputs, MetricResult, Subject, Volume
from dafnet.testing._contract import ContractReport, build, report, start
from dafnet.testing._forward import SEED, Call, NetworkCheck, expect_tensor, isolated_rng
from dafnet.testing.networks import BATCH, random_anatomy, random_images

# --------------------------------------------------------------------------- loss terms
_CLASS_OUTPUTS = {"probabilities", "logits"}
_IMAGE_OUTPUTS = {"prediction", "reconstruction", "image"}
_VECTORS = {"mu", "logvar", "z", "sampled_z", "reconstructed_z"}
_SCORES = {"scores", "fake_scores", "real_scores"}


def default_loss_inputs(forward: Callable, facts: Facts, gen: torch.Generator) -> dict[str, Tensor]:
    """Inputs for a loss ``forward`` from its argument names (dafnet's conventions).

    probabilities / logits: (B, L + 1, H, W); target beside them: (B, H, W) class indices;
    prediction / reconstruction / image and a target beside them: images in [-1, 1];
    mu, logvar, z, sampled_z, reconstructed_z: (B, z_dim); scores, fake_scores,
    real_scores: (B, 1). Any other name needs ``inputs=`` from the caller.
    """
    names = [n for n, p in inspect.signature(forward).parameters.items()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    h, w = facts.require("image_size")
    channels = facts.require("num_classes") + 1 if _CLASS_OUTPUTS & set(names) else None
    out: dict[str, Tensor] = {}
    for name in names:
        if name == "logits":
            out[name] = torch.randn(BATCH, channels, h, w, generator=gen)
        elif name == "probabilities":
            out[name] = torch.softmax(torch.randn(BATCH, channels, h, w, generator=gen), dim=1)
        elif name == "target" and channels is not None:
            out[name] = torch.randint(0, channels, (BATCH, h, w), generator=gen)
        elif name in _IMAGE_OUTPUTS or (name == "target" and _IMAGE_OUTPUTS & set(names)):
            out[name] = random_images(facts, gen)
        elif name in _VECTORS:
            out[name] = torch.randn(BATCH, facts.require("z_dim"), generator=gen)
        elif name in _SCORES:
            out[name] = torch.randn(BATCH, 1, generator=gen)
        else:
            raise AssertionError(
                f"loss forward argument {name!r}: expected one of dafnet's conventional names "
                f"({sorted(_CLASS_OUTPUTS | _IMAGE_OUTPUTS | _VECTORS | _SCORES | {'target'})}), got "
                "an unknown name; pass inputs={...} to check_loss_term")
    return out


@isolated_rng
def check_loss_term(name_or_class, params: dict | BaseModel | None = None, facts: Facts | None = None,
                    inputs: dict[str, Tensor] | Callable[[Facts], dict[str, Tensor]] | None = None,
                    *, required_params: tuple[str, ...] = ()) -> ContractReport:
    """forward(**inputs) -> a finite float32 scalar; gradients reach the float inputs."""
    contract, name, cls, params, facts = start("loss", name_or_class, params, facts, required_params)

    def make():
        return build(contract, cls, params, facts)

    if inputs is None:
        given = default_loss_inputs(make().forward, facts, torch.Generator().manual_seed(SEED + 5))
    else:
        given = inputs(facts) if callable(inputs) else dict(inputs)
    floats = tuple(k for k, v in given.items() if isinstance(v, Tensor) and v.is_floating_point())

    def check(c, out, call, net):
        return {"loss": expect_tensor(c, out, "loss", ())}

    calls = [Call(given, differentiable=())]
    checker = NetworkCheck(contract, make, calls, check)
    _, trainable = checker.run()
    # Gradients: the loss must be differentiable in at least one of its float inputs.
    live = calls[0].live()
    for key in floats:
        live[key].requires_grad_(True)
    value = make()(*live.values())
    reached = [k for k in floats if value.requires_grad and
               torch.autograd.grad(value, live[k], retain_graph=True, allow_unused=True)[0] is not None]
    contract.expect(not floats or bool(reached), "gradient reaches the loss inputs",
                    f"a gradient for at least one of {list(floats)}", "none")
    return report(contract, name, cls, params, facts, checker.shapes, trainable)


# --------------------------------------------------------------------------- metrics
def _metric_batches(facts: Facts) -> list[MetricInputs]:
    gen = torch.Generator().manual_seed(SEED + 11)
    h, w = facts.require("image_size")
    channels = facts.require("num_classes") + 1
    modalities = list(facts.require("modalities"))
    batches = []
    for case in ("case0", "case1"):
        target = torch.randint(0, channels, (BATCH, h, w), generator=gen)
        noisy = torch.nn.functional.one_hot(target, channels).permute(0, 3, 1, 2).float() * 3
        prediction = torch.softmax(noisy + torch.randn(noisy.shape, generator=gen) * 2, dim=1)
        batches.append(MetricInputs(
            case_ids=[case] * BATCH, prediction_type="fused", prediction=prediction, target=target,
            anatomy=random_anatomy(facts, gen), z=torch.randn(BATCH, facts.require("z_dim"), generator=gen),
            image=random_images(facts, gen), modality=[modalities[i % len(modalities)] for i in range(BATCH)],
            spacing=(1.0, 1.0)))
    return batches


@isolated_rng
def check_metric(name_or_class, params: dict | BaseModel | None = None, facts: Facts | None = None,
                 batches: list[MetricInputs] | None = None, *, required_params: tuple[str, ...] = (),
                 method=None, output_dir: str | None = None) -> ContractReport:
    """update per batch, compute -> MetricResult of finite numbers; reset really resets.

    ``method`` is attached (``metric.attach(method)``) for metrics that need the model, e.g. a
    decoder; ``output_dir`` is where metrics that draw figures write them.
    """
    contract, name, cls, params, facts = start("metric", name_or_class, params, facts, required_params)
    batches = batches if batches is not None else _metric_batches(facts)
    metric = build(contract, cls, params, facts)
    if output_dir is not None:
        metric.output_dir = output_dir
    if method is not None:
        metric.attach(method)

    def run_all() -> MetricResult:
        for batch in batches:
            metric.update(batch)
        return metric.compute()

    first = run_all()
    c = contract
    c.expect(isinstance(first, MetricResult), "compute() type", "MetricResult", type(first).__name__)
    summary = first.summary
    c.expect(isinstance(summary, dict) and bool(summary), "summary", "a non-empty dict", summary)
    bad = {k: v for k, v in summary.items() if not isinstance(k, str) or isinstance(v, bool)
           or not isinstance(v, (int, float)) or not math.isfinite(v)}
    c.expect(not bad, "summary values", "str -> finite float", bad)
    c.expect(isinstance(first.per_case, list) and all(isinstance(r, dict) for r in first.per_case),
             "per_case", "a list of dicts", type(first.per_case).__name__)
    c.expect(isinstance(first.files, list) and all(isinstance(f, str) for f in first.files),
             "files", "a list of str", first.files)
    metric.reset()
    again = run_all()
    c.expect(again.summary == summary, "reset() then the same updates", summary, again.summary)
    return report(contract, name, cls, params, facts, {}, 0)


# --------------------------------------------------------------------------- data sources
def _check_volume(c, where: str, vol: Any, size: tuple[int, int], num_classes: int) -> None:
    c.expect(isinstance(vol, Volume), f"{where} type", "Volume", type(vol).__name__)
    img = vol.image
    c.expect(isinstance(img, np.ndarray) and img.dtype == np.float32, f"{where} image dtype",
             "float32 ndarray", getattr(img, "dtype", type(img).__name__))
    c.expect(img.shape[1:] == tuple(size) and img.shape[0] >= 1, f"{where} image shape",
             f"(S >= 1, {size[0]}, {size[1]})", img.shape)
    c.expect(bool(np.isfinite(img).all()), f"{where} image values", "finite", "NaN/inf")
    lo, hi = float(img.min()), float(img.max())
    c.expect(lo >= -1 - 1e-6 and hi <= 1 + 1e-6, f"{where} image range", "within [-1, 1]", f"[{lo:.4g}, {hi:.4g}]")
    if vol.label is not None:
        lab = vol.label
        c.expect(lab.dtype == np.int64, f"{where} label dtype", "int64", lab.dtype)
        c.expect(int(lab.min()) >= 0 and int(lab.max()) <= num_classes, f"{where} label values",
                 f"class indices in 0..{num_classes}", f"{int(lab.min())}..{int(lab.max())}")
    pos = np.asarray(vol.slice_positions)
    c.expect(pos.dtype == np.float64 and bool(np.isfinite(pos).all()), f"{where} slice_positions",
             "finite float64", pos.dtype)
    aff = np.asarray(vol.affine)
    c.expect(aff.shape == (4, 4) and bool(np.isfinite(aff).all()), f"{where} affine", "finite 4x4", aff.shape)


def _same(a: list[Subject], b: list[Subject]) -> bool:
    if [s.id for s in a] != [s.id for s in b]:
        return False
    for sa, sb in zip(a, b):
        if sorted(sa.volumes) != sorted(sb.volumes):
            return False
        for m, va in sa.volumes.items():
            vb = sb.volumes[m]
            if not (np.array_equal(va.image, vb.image) and np.array_equal(va.slice_positions, vb.slice_positions)
                    and ((va.label is None and vb.label is None)
                         or (va.label is not None and vb.label is not None and np.array_equal(va.label, vb.label)))):
                return False
    return True


@isolated_rng
def check_data_source(name_or_class, params: dict | BaseModel | None = None,
                      facts: Facts | None = None, *, required_params: tuple[str, ...] = ()
                      ) -> ContractReport:
    """Declared facts agree with load(); volumes well-formed; loading is deterministic."""
    contract, name, cls, params, facts = start("data_source", name_or_class, params, facts, required_params)
    c = contract
    source = build(c, cls, params, facts)
    c.expect(isinstance(source, DataSource), "type", "a DataSource", type(source).__name__)
    mods, classes, size = source.modalities, source.class_names, source.image_size
    c.expect(isinstance(mods, tuple) and bool(mods) and all(isinstance(m, str) for m in mods)
             and len(set(mods)) == len(mods), "modalities", "a non-empty tuple of distinct str", mods)
    c.expect(isinstance(classes, tuple) and all(isinstance(n, str) for n in classes), "class_names",
             "a tuple of str", classes)
    c.expect(len(tuple(size)) == 2 and all(isinstance(s, int) and s > 0 for s in size), "image_size",
             "(H, W) positive ints", size)
    declared = source.declared_facts()
    c.expect(declared.get("num_classes") == len(classes) and tuple(declared.get("modalities", ())) == mods,
             "declared facts", "consistent with modalities and class_names", declared)
    subjects = source.load()
    c.expect(isinstance(subjects, list) and bool(subjects), "load()", "a non-empty list of Subject",
             type(subjects).__name__ if not isinstance(subjects, list) else f"{len(subjects)} subjects")
    ids = [s.id for s in subjects]
    c.expect(len(set(ids)) == len(ids), "subject ids", "unique", ids)
    for subject in subjects:
        c.expect(isinstance(subject, Subject), "subject type", "Subject", type(subject).__name__)
        extra = [m for m in subject.volumes if m not in mods]
        c.expect(bool(subject.volumes) and not extra, f"subject {subject.id!r} modalities",
                 f"a non-empty subset of {mods}", list(subject.volumes))
        for m, vol in subject.volumes.items():
            _check_volume(c, f"subject {subject.id!r} {m!r}", vol, tuple(size), len(classes))
    again = build(c, cls, params, facts).load()
    c.expect(_same(subjects, again), "load() deterministic", "identical subjects from a second instance",
             "different ids, volumes or arrays")
    n_slices = sum(v.num_slices for s in subjects for v in s.volumes.values())
    return report(c, name, cls, params, facts, {"subjects": (len(subjects),), "slices": (n_slices,)}, 0)
