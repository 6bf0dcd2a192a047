"""losses.displacement_l2 (a named deviation, docs/method.md): the mean squared displacement of each pair's sampling
grid from the identity, in units of the slice's side; it trains the aligner only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_aligner_learns_from import _grads
from test_method_dafnet import build, first_batch

from dafnet.components.aligners.thin_plate import ALIGN_CORNERS
from dafnet.methods.dafnet.alignment_terms import displacement_l2
from dafnet.methods.dafnet.graph import Cross, Graph


def _graph(theta: torch.Tensor, aligning: bool = True) -> Graph:
    grid = F.affine_grid(theta, [theta.shape[0], 4, 16, 12], align_corners=ALIGN_CORNERS)
    cross = Cross(0, 1, None, None, None, None, None, None, 1, grid=grid, aligning=aligning)
    return Graph(anatomy=[torch.zeros(theta.shape[0], 4, 16, 12)], crosses=[cross])


def test_zero_at_the_identity_and_the_squared_shift_for_a_translation():
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    assert displacement_l2(_graph(identity)).item() == pytest.approx(0.0, abs=1e-12)
    # A shift of 0.2 grid units in x and 0.1 in y: 0.1 and 0.05 of the slice's side at every pixel.
    shifted = torch.tensor([[1.0, 0.0, 0.2], [0.0, 1.0, 0.1]]).expand(2, 2, 3)
    assert displacement_l2(_graph(shifted)).item() == pytest.approx(0.1 ** 2 + 0.05 ** 2, rel=1e-5)
    assert displacement_l2(_graph(shifted, aligning=False)).item() == 0.0  # the aligner warm-up adds nothing


def test_it_trains_the_aligner_only_and_is_named_when_weighted():
    off = build(losses={"sup": 1.0})[0]
    assert off.weights["displacement_l2"] == 0.0
    losses = {"sup": 0.0, "rec": 0.0, "adv_mask": 0.0, "adv_image": 0.0, "kl": 0.0, "z_rec": 0.0,
              "displacement_l2": 1.0}
    method, subjects = build(losses=losses, fraction=1.0)
    with torch.no_grad():  # move the zero-initialised TPS head off the identity, so the term has a gradient
        method.aligner.localisation.head.bias.normal_(0, 0.1)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    aligner, encoder, terms = _grads(method, batch, losses)
    assert set(terms) == {"displacement_l2"} and terms["displacement_l2"] > 0
    assert aligner > 0 and encoder == 0
