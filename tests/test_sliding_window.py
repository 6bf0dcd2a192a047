"""Sliding windows with Gaussian blending (dafnet/inference/sliding_window.py): positions cover
the image edge exactly, the importance map is nnU-Net's/MONAI's, and a prediction that depends on
local content only is reproduced exactly over images of any size, sequences cut together."""

from __future__ import annotations

import math

import pytest
import torch

from dafnet.inference.sliding_window import (
    gaussian_importance,
    sliding_window_inference,
    window_positions,
    window_starts,
)


@pytest.mark.parametrize("size, window, overlap", [(64, 32, 0.5), (96, 32, 0.5), (100, 32, 0.5), (33, 32, 0.5),
                                                   (100, 32, 0.0), (257, 48, 0.25), (96, 32, 0.9)])
def test_window_starts_cover_the_edge_exactly_with_at_least_the_overlap(size, window, overlap):
    starts = window_starts(size, window, overlap)
    assert starts[0] == 0 and starts[-1] == size - window
    steps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(0 < s <= math.ceil(window * (1 - overlap)) for s in steps)
    assert max(steps) - min(steps) <= 1  # spread evenly
    covered = torch.zeros(size)
    for s in starts:
        covered[s:s + window] += 1
    assert covered.min() >= 1


def test_window_starts_small_images_and_bad_overlap():
    assert window_starts(32, 32) == [0] and window_starts(20, 32) == [0]
    assert window_starts(64, 32, 0.5) == [0, 16, 32]  # nnU-Net's steps for 64 px, patch 32, step 0.5
    assert window_starts(64, 32, 0.0) == [0, 32]
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="overlap"):
            window_starts(64, 32, bad)
    assert len(window_positions((96, 64), (32, 32), 0.5)) == 5 * 3


def test_gaussian_importance_is_centred_with_sigma_an_eighth_of_the_window():
    weights = gaussian_importance((32, 48))
    assert weights.shape == (32, 48) and weights.max() == pytest.approx(1.0, abs=1e-3)
    assert (weights > 0).all()
    torch.testing.assert_close(weights, weights.flip(0))
    torch.testing.assert_close(weights, weights.flip(1))
    # along the rows through the centre: exp(-x^2 / (2 sigma^2)), sigma = 32 / 8 = 4 px
    row = weights[:, 23] / weights[:, 23].max()
    x = torch.arange(32) - 15.5
    expected = torch.exp(-0.5 * (x / 4.0) ** 2)
    torch.testing.assert_close(row, expected / expected.max(), atol=1e-6, rtol=1e-5)


def pointwise(images: dict[str, torch.Tensor]) -> torch.Tensor:
    """Softmax over 3 classes of a pixelwise function of both sequences: depends on local
    content only, so every window predicts a pixel the same way."""
    a, b = images["a"][:, 0], images["b"][:, 0]
    return torch.softmax(torch.stack([torch.zeros_like(a), 3 * a, 2 * b - a * b], dim=1), dim=1)


@pytest.mark.parametrize("shape", [(32, 32), (64, 64), (96, 96), (100, 70), (20, 45)])
def test_a_local_prediction_is_reproduced_over_any_size(shape):
    generator = torch.Generator().manual_seed(0)
    inputs = {k: torch.rand(3, 1, *shape, generator=generator) * 2 - 1 for k in ("a", "b")}
    sizes = []

    def predict(windows):
        sizes.append({k: tuple(v.shape) for k, v in windows.items()})
        return pointwise(windows)

    out = sliding_window_inference(inputs, (32, 32), predict, overlap=0.5, batch_size=4)
    assert out.shape == (3, 3, *shape)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(3, *shape))
    # pixels padded in (images smaller than the window) are cropped away again
    torch.testing.assert_close(out, pointwise(inputs), atol=1e-6, rtol=1e-5)
    assert all(s["a"][1:] == (1, 32, 32) and s["a"] == s["b"] and s["a"][0] <= 4 for s in sizes)


def test_blending_weights_windows_by_the_gaussian():
    """A prediction that says which window it saw: each pixel's value is the Gaussian-weighted
    mean of its windows' values, so near a window centre that window dominates."""
    image = torch.zeros(1, 1, 64, 32)
    seen = []

    def predict(windows):
        n = windows["x"].shape[0]
        value = torch.tensor([len(seen) + i for i in range(n)], dtype=torch.float32)
        seen.extend(range(n))
        first = value[:, None, None].expand(n, 32, 32) / 10
        return torch.stack([first, 1 - first], dim=1)

    out = sliding_window_inference({"x": image}, (32, 32), predict, overlap=0.5, batch_size=1)
    assert len(seen) == 3  # row windows at 0, 16, 32
    weights = gaussian_importance((32, 32))
    column = weights[:, 16]
    expected = torch.zeros(64)
    total = torch.zeros(64)
    for k, start in enumerate((0, 16, 32)):
        expected[start:start + 32] += column * k / 10
        total[start:start + 32] += column
    torch.testing.assert_close(out[0, 0, :, 16], expected / total)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(1, 64, 32))


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="input 'b'"):
        sliding_window_inference({"a": torch.zeros(2, 1, 40, 40), "b": torch.zeros(2, 1, 40, 41)}, (32, 32),
                                 pointwise)
