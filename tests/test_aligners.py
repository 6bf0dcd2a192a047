"""Aligners (method.md 1.4): TPS spatial transformer, affine and identity ablations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.interpolate import RBFInterpolator

from dafnet.builder import build
from dafnet.components.aligners.thin_plate import (
    control_grid,
    dense_displacement_matrix,
    pixel_grid,
    tps_interpolation_matrix,
    tps_sampling_grid,
    tps_warp,
)
from dafnet.config.errors import RecipeError
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts


def facts(height: int = 32, width: int = 32, channels: int = 4) -> Facts:
    return Facts(image_size=(height, width), anatomy_channels=channels,
                 modalities=("a", "b"), num_classes=3)


def soft_anatomy(batch: int, channels: int, height: int, width: int, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    return torch.softmax(3 * logits, dim=1)


def set_offsets(aligner, offsets: torch.Tensor) -> None:
    """Make the localisation head output ``offsets`` (K, 2) for every input."""
    with torch.no_grad():
        aligner.localisation.head.bias.copy_(offsets.reshape(-1))


# --------------------------------------------------------------------------- TPS aligner
def test_tps_stn_has_the_paper_parameter_count():
    aligner = build("aligner", "tps", {}, facts(192, 192, 8))
    trainable = sum(p.numel() for p in aligner.parameters() if p.requires_grad)
    assert trainable == 3_395_210
    dense = aligner.localisation.features[-2]
    assert dense.in_features == 20 * 41 * 41 and dense.out_features == 100
    assert aligner.localisation.head.out_features == 50


def test_tps_is_the_identity_at_initialisation():
    aligner = build("aligner", "tps", {}, facts(32, 40, 4))
    head = aligner.localisation.head
    assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
    moving, fixed = soft_anatomy(2, 4, 32, 40, 1), soft_anatomy(2, 4, 32, 40, 2)
    out = aligner(moving, fixed)
    assert out.parameters.shape == (2, 25, 2) and torch.all(out.parameters == 0)
    assert torch.equal(out.grid, aligner.base_grid.expand(2, -1, -1, -1))
    # float32 grid_sample rounds the unnormalised pixel-centre coordinates by ~1e-6 px.
    torch.testing.assert_close(out.warped, moving, atol=1e-4, rtol=0)
    aligner = aligner.double()
    out = aligner(moving.double(), fixed.double())
    torch.testing.assert_close(out.warped, moving.double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("grid_range", "scale"), [("unit", 2.0), ("symmetric", 1.0)])
def test_control_points_land_where_the_offsets_say(grid_range, scale):
    # 33 px with align_corners=True: the 5x5 control points sit on pixels 0, 8, 16, 24, 32.
    # In the original's [0, 1] frame (unit) an offset moves a control point twice as far in
    # grid_sample's [-1, 1] frame as in the symmetric one.
    aligner = build("aligner", "tps", {"grid_range": grid_range}, facts(33, 33, 2))
    offsets = 0.2 * torch.randn(25, 2, generator=torch.Generator().manual_seed(3))
    set_offsets(aligner, offsets)
    moving = soft_anatomy(1, 2, 33, 33)
    out = aligner(moving, moving)
    torch.testing.assert_close(out.parameters[0], offsets)
    at_controls = out.grid[0, ::8, ::8].reshape(-1, 2)
    torch.testing.assert_close(at_controls, control_grid(5).float() + scale * offsets, atol=1e-6, rtol=0)
    # The interpolation matrix evaluated at the control points is the identity.
    at_points = tps_interpolation_matrix(control_grid(5), control_grid(5))
    torch.testing.assert_close(at_points, torch.eye(25, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("height", "width", "grid_size"), [(16, 16, 5), (12, 21, 5), (20, 9, 4)])
def test_dense_field_matches_scipy_thin_plate_rbf(height, width, grid_size):
    rng = np.random.default_rng(height * width)
    offsets = 0.3 * rng.standard_normal((2, grid_size ** 2, 2))
    centres = control_grid(grid_size).numpy()
    pixels = pixel_grid(height, width).reshape(-1, 2).numpy()
    ours = tps_sampling_grid(torch.from_numpy(offsets), dense_displacement_matrix(
        height, width, grid_size), pixel_grid(height, width))
    for b in range(2):
        spline = RBFInterpolator(centres, offsets[b], kernel="thin_plate_spline",
                                 degree=1, smoothing=0)
        expected = pixels + spline(pixels)
        np.testing.assert_allclose(ours[b].reshape(-1, 2).numpy(), expected, atol=1e-4, rtol=0)


def test_aligner_field_matches_scipy_in_float32():
    aligner = build("aligner", "tps", {"grid_range": "symmetric"}, facts(32, 45, 2))
    offsets = 0.25 * torch.randn(25, 2, generator=torch.Generator().manual_seed(5))
    set_offsets(aligner, offsets)
    moving = soft_anatomy(1, 2, 32, 45)
    grid = aligner(moving, moving).grid[0].reshape(-1, 2).detach().double().numpy()
    pixels = pixel_grid(32, 45).reshape(-1, 2).numpy()
    spline = RBFInterpolator(control_grid(5).numpy(), offsets.double().numpy(),
                             kernel="thin_plate_spline", degree=1, smoothing=0)
    np.testing.assert_allclose(grid, pixels + spline(pixels), atol=1e-4, rtol=0)


def test_unit_frame_is_the_original_spline_on_0_1():
    # The original's TPS: control grid and offsets on [0, 1]^2; scipy's spline there, mapped
    # back to grid_sample's [-1, 1] frame (x 2), is the default aligner's field.
    aligner = build("aligner", "tps", {}, facts(32, 45, 2))
    offsets = 0.1 * torch.randn(25, 2, generator=torch.Generator().manual_seed(6))
    set_offsets(aligner, offsets)
    moving = soft_anatomy(1, 2, 32, 45)
    grid = aligner(moving, moving).grid[0].reshape(-1, 2).detach().double().numpy()
    pixels = pixel_grid(32, 45).reshape(-1, 2).numpy()
    unit = (pixels + 1) / 2
    spline = RBFInterpolator((control_grid(5).numpy() + 1) / 2, offsets.double().numpy(),
                             kernel="thin_plate_spline", degree=1, smoothing=0)
    np.testing.assert_allclose(grid, 2 * (unit + spline(unit)) - 1, atol=1e-4, rtol=0)


def test_tps_reproduces_a_translation_exactly():
    # Equal offsets are an affine field, which the TPS (degree 1) reproduces everywhere.
    height, width, shift = 32, 37, 3
    aligner = build("aligner", "tps", {"grid_range": "symmetric"}, facts(height, width, 2)).double()
    offsets = torch.zeros(25, 2, dtype=torch.float64)
    offsets[:, 0] = 2 * shift / (width - 1)  # sample 3 px to the right
    set_offsets(aligner, offsets)
    moving = soft_anatomy(2, 2, height, width, dtype=torch.float64)
    expected = torch.zeros_like(moving)
    expected[..., : width - shift] = moving[..., shift:]  # zero padding past the border
    matrix, base = dense_displacement_matrix(height, width, 5), pixel_grid(height, width)
    warped = tps_warp(moving, offsets.expand(2, -1, -1), matrix, base)
    torch.testing.assert_close(warped, expected, atol=1e-9, rtol=0)
    # The module's buffer is float64-solved but stored in the default float32.
    torch.testing.assert_close(aligner(moving, moving).warped, expected, atol=1e-5, rtol=0)


def test_warp_passes_gradcheck_for_offsets_and_input():
    height, width = 6, 7
    generator = torch.Generator().manual_seed(7)
    image = torch.rand(2, 2, height, width, dtype=torch.float64, generator=generator)
    offsets = 0.15 * torch.randn(2, 25, 2, dtype=torch.float64, generator=generator)
    matrix = dense_displacement_matrix(height, width, 5)
    base = pixel_grid(height, width)
    image.requires_grad_(True)
    offsets.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, o: tps_warp(i, o, matrix, base), (image, offsets))


def test_tps_trains_from_the_identity():
    aligner = build("aligner", "tps", {"loc_filters": 4, "hidden": 8}, facts(32, 32, 2))
    moving, fixed = soft_anatomy(2, 2, 32, 32, 1), soft_anatomy(2, 2, 32, 32, 2)
    loss = (aligner(moving, fixed).warped - fixed).abs().mean()
    loss.backward()
    assert aligner.localisation.head.weight.grad.abs().sum() > 0
    assert aligner.localisation.head.bias.grad.abs().sum() > 0


def test_tps_buffers_are_not_saved_and_follow_the_module():
    aligner = build("aligner", "tps", {"grid_size": 4}, facts(32, 32, 2))
    assert aligner.displacement_matrix.shape == (32 * 32, 16)
    assert "displacement_matrix" not in aligner.state_dict()
    assert aligner.double().displacement_matrix.dtype == torch.float64


def test_too_small_image_is_a_clear_error():
    for kind in ("tps", "affine"):
        with pytest.raises(DafnetError, match="too small.*32x32"):
            build("aligner", kind, {}, facts(31, 64, 2))
    build("aligner", "tps", {}, facts(32, 32, 2))  # the smallest accepted size


def test_wrong_inputs_are_clear_errors():
    aligner = build("aligner", "tps", {"loc_filters": 2, "hidden": 4}, facts(32, 32, 2))
    good = soft_anatomy(1, 2, 32, 32)
    with pytest.raises(DafnetError, match="anatomy channels"):
        aligner(soft_anatomy(1, 3, 32, 32), soft_anatomy(1, 3, 32, 32))
    with pytest.raises(DafnetError, match="32x32 images"):
        aligner(soft_anatomy(1, 2, 32, 36), soft_anatomy(1, 2, 32, 36))
    with pytest.raises(DafnetError, match="differ in shape"):
        aligner(good, soft_anatomy(2, 2, 32, 32))
    with pytest.raises(RecipeError):
        build("aligner", "tps", {"grid_size": 1}, facts())
    with pytest.raises(RecipeError):
        build("aligner", "tps", {"control_points": 25}, facts())


# --------------------------------------------------------------------------- affine
def test_affine_is_the_identity_at_initialisation():
    aligner = build("aligner", "affine", {}, facts(32, 40, 4))
    moving, fixed = soft_anatomy(2, 4, 32, 40, 1), soft_anatomy(2, 4, 32, 40, 2)
    out = aligner(moving, fixed)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, -1, -1)
    assert torch.equal(out.parameters, identity)
    torch.testing.assert_close(out.warped, moving, atol=1e-4, rtol=0)
    out = aligner.double()(moving.double(), fixed.double())
    torch.testing.assert_close(out.warped, moving.double(), atol=1e-6, rtol=0)
    assert torch.count_nonzero(aligner.localisation.head.weight) == 0


def test_affine_translation_matches_the_tps_frame():
    aligner = build("aligner", "affine", {}, facts(32, 37, 2)).double()
    with torch.no_grad():
        aligner.localisation.head.bias.copy_(torch.tensor([1.0, 0.0, 2 * 3 / 36, 0.0, 1.0, 0.0], dtype=torch.float64))
    moving = soft_anatomy(1, 2, 32, 37, dtype=torch.float64)
    expected = torch.zeros_like(moving)
    expected[..., :34] = moving[..., 3:]
    torch.testing.assert_close(aligner(moving, moving).warped, expected, atol=1e-9, rtol=0)


# --------------------------------------------------------------------------- identity
def test_identity_aligner_has_no_parameters_and_returns_the_moving_anatomy():
    aligner = build("aligner", "identity", {}, facts(8, 8, 3))  # any size works
    assert list(aligner.parameters()) == []
    moving, fixed = soft_anatomy(2, 3, 8, 8, 1), soft_anatomy(2, 3, 8, 8, 2)
    out = aligner(moving, fixed)
    assert out.warped is moving
    assert out.parameters.shape == (2, 0)
    assert out.grid.shape == (2, 8, 8, 2)
    torch.testing.assert_close(F.grid_sample(moving, out.grid, align_corners=True), moving)


@pytest.mark.parametrize("grid_range", ["unit", "symmetric"])
def test_max_offset_bounds_each_control_point_to_a_fraction_of_the_slice(grid_range):
    # Named deviation: offsets pass through max_offset * tanh(raw / max_offset), in slice-side units
    # (a control point moves at most max_offset of the side, 2 * max_offset in grid_sample's frame).
    aligner = build("aligner", "tps", {"grid_range": grid_range, "max_offset": 0.1}, facts(33, 33, 2))
    moving = soft_anatomy(1, 2, 33, 33)
    set_offsets(aligner, torch.full((25, 2), 5.0))
    at_controls = aligner(moving, moving).grid[0, ::8, ::8].reshape(-1, 2) - control_grid(5).float()
    assert at_controls.abs().max() <= 0.2 + 1e-5 and at_controls.abs().min() > 0.199
    small = 0.002 * torch.randn(25, 2, generator=torch.Generator().manual_seed(0))
    set_offsets(aligner, small)
    unbounded = build("aligner", "tps", {"grid_range": grid_range}, facts(33, 33, 2))
    set_offsets(unbounded, small)
    torch.testing.assert_close(aligner(moving, moving).grid, unbounded(moving, moving).grid, atol=1e-4, rtol=0)
    set_offsets(aligner, torch.zeros(25, 2))  # the identity at initialisation, and it trains from there
    aligner(moving, soft_anatomy(1, 2, 33, 33, 5)).warped.square().sum().backward()
    assert aligner.localisation.head.weight.grad.abs().sum() > 0


def blob_anatomy(shift: int, size: int = 32) -> torch.Tensor:
    """(1, 2, size, size): a smooth disc (channel 0) and its complement, the disc shifted by ``shift`` px."""
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    disc = torch.sigmoid(6.0 - ((x - size / 2 - shift) ** 2 + (y - size / 2) ** 2).sqrt())
    return torch.stack([disc, 1 - disc])[None]


def test_refine_steps_lower_the_pairs_mismatch_at_inference_only():
    # Named deviation (instance optimisation): in eval mode the TPS offsets move from the network's
    # prediction to lower mean |warped - fixed| of each pair; training mode and the weights are untouched.
    moving, fixed = blob_anatomy(0).repeat(2, 1, 1, 1), torch.cat([blob_anatomy(3), blob_anatomy(-2)])
    plain = build("aligner", "tps", {}, facts(32, 32, 2))
    refined = build("aligner", "tps", {"refine_steps": 60, "refine_lr": 0.01}, facts(32, 32, 2))
    refined.load_state_dict(plain.state_dict())
    before = [p.clone() for p in refined.parameters()]
    torch.testing.assert_close(refined(moving, fixed).warped, plain(moving, fixed).warped)  # training mode
    refined.eval()
    with torch.no_grad():
        out = refined(moving, fixed)
    mismatch = (out.warped - fixed).abs().flatten(1).mean(1)
    assert torch.all(mismatch < 0.5 * (plain(moving, fixed).warped - fixed).abs().flatten(1).mean(1))
    # each sample moves its own way: the disc's centre comes to about +3 and -2 px (x in the sampling frame)
    centre = out.grid[:, 16, 16, 0] * 15.5
    assert centre[0] < -1.5 and centre[1] > 1.0
    assert all(torch.equal(a, b) and a.grad is None for a, b in zip(refined.parameters(), before))


def test_refine_parameters_with_no_steps_returns_the_start():
    from dafnet.components.aligners.refine import refine_parameters

    start = torch.randn(2, 25, 2)
    out = refine_parameters(start, lambda m, p: m * p.sum(), torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), 0, 0.1)
    assert torch.equal(out, start) and not out.requires_grad
