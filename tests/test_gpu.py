"""On one CUDA device (skipped without one, see conftest): the engine trains DAFNet through
Accelerate in fp32 and bf16, and compiled with CUDA graphs (train.compile), Adam is fused, the
export predicts on the GPU as on the CPU, the TPS warp and the torch distance correlation give
the CPU's numbers, and the batched warp with the slices on the GPU (data.augment.warp: batch,
data.slices_on_device) gives the CPU's per-sample batches and trains as the per-sample path does.

TF32 is switched off where numbers are compared, so the GPU computes in true fp32.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

pytestmark = pytest.mark.gpu

TINY = {
    "name": "gpu",
    "data": {"source": {"name": "phantom", "params": {"subjects": 4, "slices": 4, "image_size": 32,
                                                        "modalities": ["cine", "t2"]}},
             "modalities": ["cine", "t2"], "target": "t2", "annotation_fraction": 0.5},
    "model": {
        "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": 4, "depth": 2}},
        "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
        "segmentor": {"name": "conv_head", "params": {"filters": 8}},
        "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
    },
    "train": {"epochs": 2, "batch_size": 2, "swa_start": 2},
    "output": {"tensorboard": False, "figures": False},
}


@pytest.fixture
def true_fp32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def recipe(**train):
    from dafnet.config.resolve import parse_recipe, resolve

    spec = json.loads(json.dumps(TINY))
    spec["train"].update(train)
    return resolve(parse_recipe(spec))


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_dafnet_trains_on_the_gpu_through_accelerate(tmp_path, mixed_precision):
    from dafnet.engine import train

    result = train(recipe(mixed_precision=mixed_precision), run_dir=tmp_path / "run",
                   console=Console(file=io.StringIO()))
    meta = json.loads((result.run_dir / "metadata.json").read_text())
    assert meta["device"].startswith("cuda") and meta["mixed_precision"] == mixed_precision
    assert result.epochs_run == 2
    assert all(np.isfinite(v) for row in result.history for v in row.values() if isinstance(v, float))
    weights = load_file(str(result.export_dir / "anatomy_encoder.safetensors"))
    assert all(t.device.type == "cpu" and torch.isfinite(t.float()).all() for t in weights.values())
    assert 0.0 <= result.summary["monitor"] <= 1.0, result.summary


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_dafnet_trains_compiled_with_cuda_graphs(tmp_path, mixed_precision):
    """train.compile: reduce-overhead (torch.compile with CUDA graphs) through the freezer's phases, the
    SWA BatchNorm pass and the evaluations; the export holds plain weights and predicts."""
    from dafnet.engine import train
    from dafnet.engine.export import load_export

    result = train(recipe(mixed_precision=mixed_precision, compile="reduce-overhead"), run_dir=tmp_path / "run",
                   console=Console(file=io.StringIO()))
    assert result.epochs_run == 2 and result.weights == "swa"
    assert all(np.isfinite(v) for row in result.history for v in row.values() if isinstance(v, float))
    keys = [k for f in result.export_dir.glob("*.safetensors") for k in load_file(str(f))]
    assert keys and not any("_orig_mod" in k for k in keys)
    images = {m: torch.rand(2, 1, 32, 32, device="cuda") for m in ("cine", "t2")}
    method = load_export(result.export_dir, device="cuda")
    fused = method.predict(images, "t2")["fused"]
    assert torch.isfinite(fused).all() and fused.shape == (2, method.num_classes + 1, 32, 32)


def test_adam_is_fused_on_cuda_and_steps():
    from types import SimpleNamespace

    from dafnet.engine.optim import build_optimizers

    net = torch.nn.Linear(3, 2).cuda()
    train = SimpleNamespace(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0)
    optimizer = build_optimizers({"net": net}, {"g": ["net"]}, train)["g"]
    assert optimizer.defaults["fused"] is True
    before = net.weight.detach().clone()
    net(torch.ones(4, 3, device="cuda")).square().sum().backward()
    optimizer.step()
    assert not torch.equal(before, net.weight.detach())


def test_the_export_predicts_the_same_on_gpu_and_cpu(tmp_path, true_fp32):
    from dafnet.engine import train
    from dafnet.engine.export import load_export

    result = train(recipe(epochs=1, swa_start=None), run_dir=tmp_path / "run", console=Console(file=io.StringIO()))
    generator = torch.Generator().manual_seed(0)
    images = {m: torch.rand(3, 1, 32, 32, generator=generator) * 2 - 1 for m in ("cine", "t2")}
    on_cpu = load_export(result.export_dir, device="cpu").predict(images, "t2")
    on_gpu = load_export(result.export_dir, device="cuda").predict({m: x.cuda() for m, x in images.items()}, "t2")
    assert set(on_cpu) == set(on_gpu)
    for kind in on_cpu:
        # the binary anatomy may flip a pixel that sits at a rounding tie; everything else agrees
        close = torch.isclose(on_gpu[kind].cpu(), on_cpu[kind], atol=1e-4)
        assert close.float().mean() > 0.999, kind


def test_the_batch_warp_on_the_gpu_gives_the_cpus_sample_batches(true_fp32):
    from test_batch_warp import stream_batches, tiny

    from dafnet.assemble import build_data_source
    from dafnet.config.resolve import parse_recipe, resolve

    subjects = build_data_source(resolve(parse_recipe(tiny())))[0].load()
    want = stream_batches(tiny("sample"), subjects)
    got = stream_batches(tiny("batch", on_device=True), subjects, slices_device="cuda")
    for name, (raw, warped) in got.items():
        assert raw["images"].is_cuda and raw["masks"].is_cuda  # gathered from the slices held there
        sample_batch = want[name][0]
        assert list(warped) == list(sample_batch)
        for key, value in sample_batch.items():
            on_gpu = warped[key].cpu()
            assert on_gpu.shape == value.shape and on_gpu.dtype == value.dtype, key
            if key == "masks":  # nearest: a pixel at a rounding tie may go the other way
                assert (on_gpu == value).float().mean() > 0.999
            elif value.is_floating_point():
                torch.testing.assert_close(on_gpu, value, atol=1e-4, rtol=1e-4, msg=key)
            else:
                assert torch.equal(on_gpu, value), key


def test_dafnet_trains_with_the_batch_warp_and_the_slices_on_the_gpu(tmp_path, true_fp32):
    from dafnet.config.resolve import parse_recipe, resolve
    from dafnet.engine import train

    first = {}
    for warp, held in (("sample", False), ("batch", True)):
        spec = json.loads(json.dumps(TINY))
        spec["data"].update(slices_on_device=held, augment={"misalignment_degrees": 10.0, "warp": warp})
        spec["train"].update(epochs=1, swa_start=None)
        result = train(resolve(parse_recipe(spec)), run_dir=tmp_path / warp, console=Console(file=io.StringIO()))
        first[warp] = result.history[0]
    checked = 0
    for key, value in first["sample"].items():
        if key.startswith(("labelled/", "unlabelled/")):  # cuDNN's backward may sum in another order
            assert first["batch"][key] == pytest.approx(value, rel=1e-2, abs=1e-3), key
            checked += 1
    assert checked >= 10


def test_tps_warp_on_the_gpu_equals_the_cpu(true_fp32):
    from dafnet.builder import build
    from dafnet.interfaces import Facts

    torch.manual_seed(0)
    facts = Facts(image_size=(48, 40), anatomy_channels=3, modalities=("a", "b"), num_classes=2)
    aligner = build("aligner", "tps", {}, facts)
    generator = torch.Generator().manual_seed(1)
    fixed = torch.rand(2, 3, 48, 40, generator=generator)
    moving = torch.rand(2, 3, 48, 40, generator=generator)
    with torch.no_grad():
        for p in aligner.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    aligner.eval()
    on_cpu = aligner(moving, fixed)
    on_gpu = aligner.cuda()(moving.cuda(), fixed.cuda())
    torch.testing.assert_close(on_gpu.warped.cpu(), on_cpu.warped, atol=1e-5, rtol=1e-5)


def test_distance_correlation_on_the_gpu_equals_the_dcor_package():
    import dcor

    from dafnet.metrics.dcor import distance_correlation, u_distance_correlation_sqr

    rng = np.random.default_rng(0)
    x = (rng.random((300, 512)) > 0.7).astype(np.float64)
    y = x[:, :3] @ rng.normal(size=(3, 8)) + 0.1 * rng.normal(size=(300, 8))
    expected = dcor.distance_correlation(x, y)
    assert distance_correlation(x, y, chunk=64, device="cuda") == pytest.approx(expected, abs=1e-6)
    expected = dcor.u_distance_correlation_sqr(x, y)
    assert u_distance_correlation_sqr(x, y, device="cuda") == pytest.approx(expected, abs=1e-6)
