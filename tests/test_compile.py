"""The fast path (docs/engine.md): ``train.compile`` compiles the networks in place, and Adam is fused on CUDA.

torch.compile on the CPU generates and builds C++ for every graph, several seconds each. The toy engine
method (tests/test_engine.py) is compiled for real (inductor, mode ``default``); DAFNet's networks are
traced by Dynamo with its ``eager`` backend, which captures, guards and recompiles exactly as a real run
(the recompile limit, the freezer's requires_grad flips, evaluation under no_grad) but runs the captured
graphs without generating code; the real compilation of DAFNet is the one slow test. On a GPU,
tests/test_gpu.py trains DAFNet compiled with CUDA graphs and checks fused Adam.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys

import pytest
import torch
from _toys import TINY_DAFNET
from safetensors.torch import load_file
from test_engine import quiet, toy_recipe

from dafnet.config.resolve import parse_recipe, resolve
from dafnet.errors import DafnetError


@pytest.fixture(autouse=True)
def _fresh_dynamo(monkeypatch):
    """Dynamo's caches live on the code objects for the whole process: every test starts and ends
    without them, and the recompile limit a compiled run raises is put back."""
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    yield
    torch._dynamo.reset()


def _spy_on_compiled(monkeypatch) -> dict:
    """The networks the training session compiles, by role."""
    from dafnet.engine import session

    seen: dict = {}
    real = session.compile_networks

    def spy(networks, mode, device):
        seen.update(networks)
        return real(networks, mode, device)

    monkeypatch.setattr(session, "compile_networks", spy)
    return seen


def _dynamo_only(monkeypatch) -> None:
    """torch.compile with Dynamo's ``eager`` backend (no code generation; ``mode`` is inductor's)."""
    real = torch.compile

    def compile_(model=None, *, mode=None, **kwargs):
        return real(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_)


def _tiny_dafnet(tmp_path, name: str, **train) -> dict:
    recipe = copy.deepcopy(TINY_DAFNET)
    recipe["train"].update({"patience": None, **train})
    recipe["output"] = {"root": str(tmp_path), "name": name, "tensorboard": False, "figures": False}
    return recipe


def _same_losses(a: list[dict], b: list[dict], rel: float) -> int:
    checked = 0
    for row_a, row_b in zip(a, b, strict=True):
        for key, value in row_a.items():
            if key.endswith(("/total", "/sup", "/l1", "/real", "/fake", "/adversarial", "monitor")):
                assert math.isfinite(value) and row_b[key] == pytest.approx(value, rel=rel, abs=rel), key
                checked += 1
    return checked


# --------------------------------------------------------------------------- the recipe key
def test_compile_is_off_by_default_and_a_bad_value_is_refused():
    from dafnet.config.errors import RecipeError
    from dafnet.config.schema import TrainConfig

    assert TrainConfig().compile == "off"
    assert TrainConfig(compile=False).compile == "off"  # YAML reads a bare `off` as false
    assert TrainConfig.model_validate({"compile": "max-autotune"}).compile == "max-autotune"
    for bad, says in (("fast", "'off', 'default', 'reduce-overhead' or 'max-autotune'"), (True, "names no mode")):
        with pytest.raises(RecipeError) as caught:
            resolve(parse_recipe({**TINY_DAFNET, "train": {"compile": bad}}))
        assert "train.compile" in str(caught.value) and says in str(caught.value)


def test_fused_adam_is_chosen_for_cuda_parameters_only():
    from types import SimpleNamespace

    from dafnet.engine.optim import build_optimizers, fused_adam

    def on(device: str, floating: bool = True):
        return SimpleNamespace(device=torch.device(device), is_floating_point=lambda: floating)

    assert fused_adam([on("cuda"), on("cuda:0")])
    assert not fused_adam([on("cuda"), on("cpu")]) and not fused_adam([on("cpu")]) and not fused_adam([])
    assert not fused_adam([on("cuda", floating=False)])
    assert not fused_adam([on("cuda")], torch_version="2.3.1") and fused_adam([on("cuda")], torch_version="2.4.0")
    net = torch.nn.Linear(2, 2)
    optimizer = build_optimizers({"net": net}, {"g": ["net"]}, SimpleNamespace(lr=1e-3, betas=(0.9, 0.99),
                                                                               weight_decay=0.0))["g"]
    assert not optimizer.defaults["fused"]  # the CPU: torch's default implementation (tests/test_gpu.py: CUDA)


# --------------------------------------------------------------------------- a compiled run
def test_compiled_training_matches_eager_and_exports_plain_weights(tmp_path, one_thread, monkeypatch):
    """Inductor for real: the toy's critic is compiled (its generator is an nn.Sequential, which
    torch.compile leaves eager, and says so); the freezer flips requires_grad between its phases."""
    from dafnet.engine import load_export, train
    from dafnet.engine.compiling import is_compiled

    compiled = _spy_on_compiled(monkeypatch)
    eager = train(toy_recipe(tmp_path, train={"iterations_per_epoch": 2}), run_dir=tmp_path / "eager",
                  console=quiet())
    console = quiet()
    fast = train(toy_recipe(tmp_path, train={"iterations_per_epoch": 2, "compile": "default"}),
                 run_dir=tmp_path / "compiled", console=console)
    assert is_compiled(compiled["critic"]) and is_compiled(compiled["generator"])
    assert "generator run eagerly" in " ".join(console.file.getvalue().split())
    # equal here (the critic's graphs are BLAS matmuls and elementwise kernels); generated kernels may sum
    # in another order than ATen's, float32 rounding that two Adam steps carry to ~1e-6 of a loss (the
    # slow DAFNet test below measured 2e-6): 1e-4 leaves room and still catches a wrong graph
    assert _same_losses(eager.history, fast.history, rel=1e-4) >= 12
    for role in ("generator", "critic"):
        keys = set(load_file(str(fast.export_dir / f"{role}.safetensors")))
        assert keys == set(load_file(str(eager.export_dir / f"{role}.safetensors")))
        assert not any("_orig_mod" in k for k in keys)
    method = load_export(fast.export_dir)
    assert not any(is_compiled(net) for net in method.networks().values())
    x = torch.linspace(-1, 1, 8).reshape(2, 4)
    assert torch.allclose(method.generator(x), load_export(eager.export_dir).generator(x), atol=1e-4)


def test_dafnet_networks_trace_within_the_recompile_limit_and_export(tmp_path, one_thread, monkeypatch):
    """Three epochs with SWA from epoch 2 (validation of the average, its BatchNorm pass) under Dynamo:
    every phase's requires_grad flags, evaluation and the BatchNorm pass recompile within the limit."""
    import torch._dynamo
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from dafnet.engine import load_export, train
    from dafnet.engine.compiling import RECOMPILE_LIMIT

    _dynamo_only(monkeypatch)
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    compiled = _spy_on_compiled(monkeypatch)
    runs = {}
    for mode in ("off", "default"):
        recipe = _tiny_dafnet(tmp_path, mode, epochs=3, swa_start=2, compile=mode)
        runs[mode] = train(resolve(parse_recipe(recipe)), console=quiet())
    assert torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT
    versions = {type(net).__name__: len(_debug_get_cache_entry_list(type(net).forward.__code__))
                for net in compiled.values()}
    assert versions["LSGANConvDiscriminator"] > 8  # torch's default limit would have left it eager
    assert max(versions.values()) <= RECOMPILE_LIMIT // 2, versions
    assert runs["default"].weights == "swa"
    # the eager backend runs the captured ATen graph: the same operations in the same order
    assert _same_losses(runs["off"].history, runs["default"].history, rel=1e-5) >= 30
    export = runs["default"].export_dir
    assert not any("_orig_mod" in k for f in export.glob("*.safetensors") for k in load_file(str(f)))
    method = load_export(export)
    images = {m: torch.rand(2, 1, 32, 32) for m in method.modalities}
    with torch.no_grad():
        predicted = method.predict(images)
        expected = load_export(runs["off"].export_dir).predict(images)
    for kind, probabilities in predicted.items():
        assert probabilities.shape == (2, method.num_classes + 1, 32, 32)
        assert torch.allclose(probabilities, expected[kind], atol=1e-4), kind


@pytest.mark.slow
def test_dafnet_compiled_for_real_trains_like_eager_and_predicts(tmp_path, one_thread, monkeypatch):
    """Inductor on DAFNet (25 graphs, each built as C++: 184 s on one loaded CPU thread with an empty
    inductor cache, 17 s with a warm one): two epochs of one iteration each, so the log's rows are the
    losses of iterations 1 and 2."""
    import torch._inductor.config

    from dafnet.engine import load_export, train

    # inductor draws its own random numbers (the VAE's z sample, ...) unless told to call ATen's; with
    # other draws the losses differ by up to 50 % at iteration 1, which says nothing about the graphs
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    runs = {}
    for mode in ("off", "default"):
        recipe = _tiny_dafnet(tmp_path, mode, epochs=2, iterations_per_epoch=1, compile=mode)
        runs[mode] = train(resolve(parse_recipe(recipe)), console=quiet())
    # the same draws: generated kernels sum in another order than ATen's, and float32 rounding left the
    # training losses of iterations 1 and 2 within 2.2e-6 of eager's (relative); 1e-4 leaves room for
    # another CPU's kernels and still catches a wrong graph (a wrong gradient moves a loss by far more)
    assert _same_losses(runs["off"].history, runs["default"].history, rel=1e-4) >= 20
    method = load_export(runs["default"].export_dir)
    images = {m: torch.rand(2, 1, 32, 32) for m in method.modalities}
    with torch.no_grad():
        fused = method.predict(images)["fused"]
    assert fused.shape == (2, method.num_classes + 1, 32, 32)
    assert torch.allclose(fused.sum(1), torch.ones(2, 32, 32), atol=1e-4)


# --------------------------------------------------------------------------- no compiler
def test_a_missing_compiler_is_a_clear_error_naming_the_key():
    """No C++ compiler (CXX names none; inductor's caches off, so it must build): a DafnetError."""
    code = ("import torch\nfrom dafnet.engine.compiling import check_compiler\nfrom dafnet.errors import DafnetError\n"
            "try:\n    check_compiler('default', torch.device('cpu'))\nexcept DafnetError as e:\n"
            "    print('ERROR', e)\n")
    env = {**os.environ, "CXX": "/nonexistent/c++", "TORCHINDUCTOR_FX_GRAPH_CACHE": "0",
           "TORCHINDUCTOR_AUTOGRAD_CACHE": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and out.startswith("ERROR train.compile: 'default'"), proc.stdout + proc.stderr
    assert "C++ compiler" in out and "train.compile=off" in out


def test_a_run_whose_compiler_fails_stops_before_training(tmp_path, monkeypatch):
    from dafnet.engine import train

    def broken(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(DafnetError) as caught:
        train(toy_recipe(tmp_path, train={"compile": "max-autotune"}), run_dir=tmp_path / "run", console=quiet())
    assert "train.compile: 'max-autotune'" in caught.value.message and "train.compile=off" in caught.value.hint
    assert not (tmp_path / "run").exists()  # a new run that fails before its first state leaves nothing
