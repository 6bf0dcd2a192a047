"""Dice conventions, HD95, the modality probe, the latent traversal, the figures and DAFNet's evaluation inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dafnet.assemble import assemble
from dafnet.components.aligners.thin_plate import sample
from dafnet.config.resolve import parse_recipe, resolve
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Method, MethodContext, MetricInputs
from dafnet.metrics.dice import DiceMetric, class_overlaps_per_slice, monai_dice_per_volume
from dafnet.metrics.figures import FiguresMetric
from dafnet.metrics.hd95 import HD95Metric, hd95
from dafnet.metrics.probe import ModalityProbeMetric
from dafnet.metrics.traversal import LatentTraversalMetric, pixel_correlation
from dafnet.registry import registry


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs single-threaded (conftest's one_thread)."""
    yield


def probs_of(labels: torch.Tensor, channels: int = 3) -> torch.Tensor:
    return F.one_hot(labels, channels).permute(0, 3, 1, 2).float()


def test_every_metric_is_registered():
    names = set(registry("metric").names())
    assert {"dice", "hd95", "dcor", "probe", "traversal", "figures"} <= names


# --------------------------------------------------------------------------- Dice
def monai_formula(pred_labels: np.ndarray, truth: np.ndarray, classes: int, ignore_empty: bool) -> np.ndarray:
    """MONAI's compute_dice on one volume: one-hot, background dropped, sums over space."""
    p = np.stack([pred_labels == c for c in range(1, classes + 1)]).reshape(classes, -1).astype(float)
    t = np.stack([truth == c for c in range(1, classes + 1)]).reshape(classes, -1).astype(float)
    inter, y_o, p_o = (p * t).sum(1), t.sum(1), p.sum(1)
    denominator = y_o + p_o
    if ignore_empty:
        return np.where(y_o > 0, 2 * inter / np.where(denominator > 0, denominator, 1), np.nan)
    return np.where(denominator > 0, 2 * inter / np.where(denominator > 0, denominator, 1), 1.0)


@pytest.mark.parametrize("ignore_empty", [True, False])
def test_3d_dice_matches_monais_formula_on_random_volumes(ignore_empty):
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth = rng.integers(0, 3, (4, 6, 6))
        truth[truth == 2] = rng.integers(0, 2) * 2  # class 2 sometimes absent
        pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
        counts = class_overlaps_per_slice(probs_of(torch.from_numpy(pred), 4), torch.from_numpy(truth))
        ours = monai_dice_per_volume(*(c.numpy() for c in counts), ["v"] * 4, ignore_empty)["v"]
        np.testing.assert_allclose(ours, monai_formula(pred, truth, 3, ignore_empty), equal_nan=True)


def test_3d_dice_by_hand_and_empty_cases():
    truth = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])   # class 1: 3 px, class 2: none
    pred = torch.tensor([[[1, 0, 2, 0]], [[1, 1, 0, 0]]])    # class 1: 3 px (2 right), class 2: 1 px
    counts = [c.numpy() for c in class_overlaps_per_slice(probs_of(pred), truth)]
    ignore = monai_dice_per_volume(*counts, ["v", "v"], ignore_empty=True)["v"]
    assert ignore[0] == pytest.approx(2 * 2 / 6) and math.isnan(ignore[1])      # only predicted: NaN
    keep = monai_dice_per_volume(*counts, ["v", "v"], ignore_empty=False)["v"]
    assert keep[1] == 0.0                                                       # only predicted: 0
    empty = [np.zeros((1, 2))] * 3
    assert math.isnan(monai_dice_per_volume(*empty, ["e"], True)["e"][0])
    assert monai_dice_per_volume(*empty, ["e"], False)["e"][0] == 1.0          # empty/empty: 1


def test_dice_metric_names_both_conventions_per_type_class_and_pooled():
    metric = DiceMetric(DiceMetric.Params(), Facts(class_names=("lv", "myo")))
    truth = torch.tensor([[[1, 2], [0, 0]], [[1, 1], [0, 0]], [[2, 2], [0, 0]]])
    half = torch.tensor([[[1, 0], [0, 0]], [[1, 1], [0, 0]], [[2, 2], [0, 0]]])
    for kind, pred in (("single", half), ("fused", truth)):
        metric.update(MetricInputs(case_ids=["a", "a", "b"], prediction_type=kind, prediction=probs_of(pred),
                                   target=truth))
    summary = metric.compute().summary
    # paper: per slice pooled, volume a slices: 2*1/3 = 66.7 and 100 -> 83.3; volume b 100
    assert summary["dice_single_mean"] == pytest.approx((100 * (2 / 3 + 1) / 2 + 100) / 2)
    # 3D per class, volume a: lv 100, myo (truth 1 px, predicted 0) 0; volume b: lv NaN (absent), myo 100
    assert summary["dice3d_single_lv_mean"] == pytest.approx(100.0)
    assert summary["dice3d_single_myo_mean"] == pytest.approx(50.0)
    assert summary["dice3d_single_mean"] == pytest.approx((50 + 100) / 2)
    # pooled foreground, volume a: 2*3/(3+4)
    assert summary["dice3d_single_foreground_mean"] == pytest.approx((100 * 6 / 7 + 100) / 2)
    assert summary["dice3d_fused_mean"] == pytest.approx(100.0)


# --------------------------------------------------------------------------- HD95
def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    from scipy import ndimage

    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m, ndimage.generate_binary_structure(m.ndim, 1)))
    pa, pb = surface(a) * np.asarray(spacing), surface(b) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_hd95_by_hand_brute_force_and_empty():
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.roll(a, 3, axis=1)
    assert hd95(a, b, (1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(a, b, (1.0, 2.0)) == pytest.approx(6.0)              # columns are 2 mm apart
    rng = np.random.default_rng(0)
    c = ndimage_blob(rng, (12, 16, 16))
    d = ndimage_blob(rng, (12, 16, 16))
    assert hd95(c, d, (3.0, 1.5, 1.5)) == pytest.approx(brute_force_hd95(c, d, (3.0, 1.5, 1.5)))
    assert math.isnan(hd95(a, np.zeros_like(a), (1, 1)))
    assert math.isnan(hd95(np.zeros_like(a), np.zeros_like(a), (1, 1)))


def ndimage_blob(rng, shape):
    from scipy import ndimage

    return ndimage.gaussian_filter(rng.random(shape), 2) > 0.5


def test_hd95_metric_stacks_consecutive_slices_in_3d_else_2d():
    truth = torch.zeros(3, 16, 16, dtype=torch.long)
    truth[:, 4:10, 4:10] = 1
    pred = torch.roll(truth, 2, dims=2)
    inputs = dict(case_ids=["v"] * 3, prediction_type="fused", prediction=probs_of(pred, 2), target=truth,
                  spacing=(1.5, 1.5), slice_index=torch.tensor([2, 0, 1]))
    three_d = HD95Metric(HD95Metric.Params(), Facts(class_names=("fg",)))
    three_d.update(MetricInputs(**inputs, slice_spacing=8.0))
    two_d = HD95Metric(HD95Metric.Params(), Facts(class_names=("fg",)))
    two_d.update(MetricInputs(**inputs))
    s3, s2 = three_d.compute().summary, two_d.compute().summary
    assert s3["hd95_fused_volumes_3d"] == 1 and s2["hd95_fused_volumes_3d"] == 0
    assert s2["hd95_fused_fg_mean"] == pytest.approx(3.0)             # 2 px * 1.5 mm on every slice
    expected = brute_force_hd95(pred.numpy() == 1, truth.numpy() == 1, (8.0, 1.5, 1.5))
    assert s3["hd95_fused_fg_mean"] == pytest.approx(expected)
    with pytest.raises(DafnetError):
        HD95Metric(HD95Metric.Params(), Facts()).update(MetricInputs(case_ids=["v"]))


# --------------------------------------------------------------------------- probe
def probe_inputs(informative: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for subject in range(8):
        for m, name in enumerate(("t1", "t2")):
            z = rng.normal(size=(10, 4))
            if informative:
                z[:, 1] += 4.0 * (2 * m - 1)
            out.append(MetricInputs(case_ids=[f"s{subject}"] * 10, prediction_type="factors",
                                    z=torch.tensor(z, dtype=torch.float32), modality=[name] * 10,
                                    logvar=torch.full((10, 4), math.log(0.25))))
    return out


def run_probe(inputs):
    metric = ModalityProbeMetric(ModalityProbeMetric.Params(), Facts())
    for item in inputs:
        metric.update(item)
    return metric.compute().summary


def test_probe_finds_the_modality_dimension_and_is_at_chance_on_noise():
    informative = run_probe(probe_inputs(True))
    assert informative["probe_accuracy"] >= 99.0
    assert informative["probe_accuracy_dim2"] >= 99.0
    assert max(informative[f"probe_accuracy_dim{d}"] for d in (1, 3, 4)) < 75.0
    assert informative["z_variance_dim1"] == pytest.approx(0.25)
    assert informative["probe_test_subjects"] == 2 and informative["probe_test_samples"] == 40
    noise = [run_probe(probe_inputs(False, seed))["probe_accuracy"] for seed in range(3)]
    assert 30.0 <= float(np.mean(noise)) <= 70.0


# --------------------------------------------------------------------------- traversal and figures
class LinearDecoder(nn.Module):
    """image = tanh-free linear map: pixel (i, j) depends on z_1 left half, z_2 nowhere."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, anatomy, z):
        image = anatomy.sum(1, keepdim=True) * 0.1
        left = torch.zeros_like(image)
        left[..., : image.shape[-1] // 2] = 1.0
        return image + self.scale * z[:, 0, None, None, None] * left


def test_traversal_correlation_and_difference_follow_the_decoder(tmp_path):
    method = nn.Module()
    method.decoder, method.target = LinearDecoder(), "t2"
    metric = LatentTraversalMetric(LatentTraversalMetric.Params(steps=5), Facts())
    metric.attach(method)
    metric.output_dir = tmp_path
    anatomy = torch.rand(2, 3, 8, 8)
    metric.update(MetricInputs(case_ids=["a", "a"], anatomy=anatomy, z=torch.zeros(2, 2), modality=["t1", "t2"]))
    result = metric.compute()
    assert result.summary["traversal_mean_abs_difference_dim1"] == pytest.approx(0.1 * 6 / 2)
    assert result.summary["traversal_mean_abs_correlation_dim1"] == pytest.approx(0.5)
    assert result.summary["traversal_mean_abs_difference_dim2"] == pytest.approx(0.0)
    assert (tmp_path / "traversal_t2.png").stat().st_size > 1000
    values = torch.linspace(-1, 1, 5)
    assert torch.allclose(pixel_correlation(values, (3 * values - 1)[:, None, None].expand(5, 2, 2)),
                          torch.ones(2, 2))
    with pytest.raises(DafnetError):
        LatentTraversalMetric(LatentTraversalMetric.Params(), Facts()).attach(nn.Module())


def tiny_method():
    recipe = {
        "name": "tiny",
        "data": {"source": {"name": "phantom", "params": {"subjects": 2, "slices": 3, "image_size": 32,
                                                          "modalities": ["cine", "lge"]}}},
        "model": {
            "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": 4, "depth": 2}},
            "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
            "segmentor": {"name": "conv_head", "params": {"filters": 8}},
            "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
        },
    }
    torch.manual_seed(0)
    source, facts, method = assemble(resolve(parse_recipe(recipe)))
    return method, source.load(), facts


def test_dafnet_evaluation_inputs_and_figures(tmp_path):
    method, subjects, facts = tiny_method()
    batch = next(iter(DataLoader(method.eval_dataset(subjects), batch_size=3, collate_fn=method.collate)))
    inputs = method.evaluation_inputs(batch)
    kinds = [i.prediction_type for i in inputs]
    assert kinds == ["single", "deformed", "fused", "copy_cine", "aligned_copy_cine", "alignment_cine",
                     "factors", "factors"]
    for item in inputs[:5]:
        assert item.prediction.shape == (3, facts.num_classes + 1, 32, 32) and item.target.shape == (3, 32, 32)
        assert item.modality == ["lge"] * 3 and item.anatomy is None
        torch.testing.assert_close(item.prediction.sum(1), torch.ones(3, 32, 32), atol=1e-5, rtol=0)
    copy, aligned = inputs[3].prediction, inputs[4].prediction
    assert torch.equal(copy.argmax(1), batch["masks"][:, 0, 0])
    assert torch.equal(inputs[3].target, batch["masks"][:, 1, 0])
    torch.testing.assert_close(aligned, copy, atol=1e-4, rtol=0)  # the TPS starts at the identity
    errors = inputs[5].alignment  # the phantom's coordinates: the error against the truth, no prediction
    assert inputs[5].prediction is None and errors.source == "cine" and errors.aligner_mm.shape == (3, 32, 32)
    counted = errors.identity_mm.isfinite()
    assert torch.equal(counted, batch["masks"][:, 1, 0] > 0)  # the target's foreground
    torch.testing.assert_close(errors.aligner_mm[counted], errors.identity_mm[counted], atol=1e-3, rtol=0)
    factors = {i.modality[0]: i for i in inputs[6:]}
    assert set(factors) == {"cine", "lge"}
    assert factors["cine"].z.shape == factors["cine"].logvar.shape == (3, method.z_dim)
    assert factors["cine"].anatomy.shape[1] == method.facts.anatomy_channels
    assert torch.equal(factors["lge"].slice_index, batch["slice"])
    # Away from the identity, aligned_copy is the cine mask moved by Align(s_cine -> s_lge) and the
    # factors are those of each modality's own images (all computed once, in predict_target).
    method.eval()  # as evaluation_inputs runs
    with torch.no_grad():
        method.aligner.localisation.head.weight.normal_(0, 0.05)
        method.aligner.localisation.head.bias.normal_(0, 0.05)
        moved = method.evaluation_inputs(batch)
        images = batch["images"][:, :, 0]
        s_cine, s_lge = (method.anatomy_encoder(images[:, m], m).anatomy for m in (0, 1))
        grid = method.aligner(s_cine, s_lge).grid
        expected = sample(copy, grid)
    assert (moved[4].prediction - copy).abs().max() > 0.1
    torch.testing.assert_close(moved[4].prediction, expected)
    torch.testing.assert_close(moved[5].alignment.grid, grid)  # the same grid
    torch.testing.assert_close(moved[6].anatomy, s_cine)
    torch.testing.assert_close(moved[7].z, method.modality_encoder(images[:, 1], s_lge).mu)
    metric = FiguresMetric(FiguresMetric.Params(samples=2), facts)
    metric.attach(method)
    metric.output_dir = tmp_path
    for item in inputs:
        metric.update(item)
    result = metric.compute()
    names = {p.split("/")[-1] for p in result.files}
    assert names == {"segmentation.png", "anatomy_channels.png", "alignment.png", "reconstruction.png"}
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)
    assert np.isfinite(result.summary["alignment_abs_difference_after"])


def test_a_method_without_evaluation_inputs_says_so():
    class Bare:
        context = MethodContext(method="bare")

    with pytest.raises(DafnetError, match="method bare does not support dafnet evaluate"):
        Method.evaluation_inputs(Bare(), {})


def test_metric_hooks_are_declared_on_the_abc_with_defaults():
    from dafnet.metrics.dice import DiceMetric
    from dafnet.metrics.figures import FiguresMetric

    facts = Facts(image_size=(8, 8), modalities=("cine", "lge"), num_classes=1, class_names=("fg",))
    dice = DiceMetric(DiceMetric.Params(), facts)
    assert dice.method is None and dice.output_dir is None  # the defaults, before the driver sets them
    assert not dice.wants(MetricInputs(case_ids=["a"], prediction=torch.zeros(1, 2, 8, 8)))
    assert dice.wants(MetricInputs(case_ids=["a"], prediction=torch.zeros(1, 2, 8, 8),
                                   target=torch.zeros(1, 8, 8, dtype=torch.long)))
    figures = FiguresMetric(FiguresMetric.Params(), facts)
    assert figures.wants(MetricInputs(case_ids=["a"]))  # required_inputs () -> every input
    marker = object()
    figures.attach(marker)  # the ABC's default attach keeps the method
    assert figures.method is marker
    assert "attach" not in vars(FiguresMetric) and "wants" not in vars(DiceMetric)
