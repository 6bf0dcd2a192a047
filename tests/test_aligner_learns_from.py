"""method.params.aligner_learns_from (a named deviation, docs/method.md): with ``alignment_terms`` the cross terms
read the warped anatomy through a constant grid, so only the alignment terms train the aligner."""

from __future__ import annotations

import pytest
import torch
from test_method_dafnet import build, first_batch

from dafnet.methods.dafnet.graph import training_graph
from dafnet.methods.dafnet.steps import generator_step

CROSS_TERMS = {"sup": 1.0, "rec": 1.0, "adv_mask": 1.0, "kl": 0.0, "z_rec": 0.0, "adv_image": 0.0}


def _grads(method, batch, losses):
    """(aligner gradient norm, anatomy encoder gradient norm, the step's terms) of one generator step."""
    method.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    out = generator_step(method, batch, {})
    out.total.backward()

    def norm(module):
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    return norm(method.aligner), norm(method.anatomy_encoder), out.terms


@pytest.mark.parametrize("learns_from", ["all", "alignment_terms"])
def test_cross_terms_move_the_aligner_only_when_it_learns_from_all(learns_from):
    method, subjects = build(losses=CROSS_TERMS, fraction=1.0, params={"aligner_learns_from": learns_from})
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    aligner, encoder, _ = _grads(method, batch, CROSS_TERMS)
    assert encoder > 0  # the anatomies still learn from the cross terms
    assert (aligner > 0) == (learns_from == "all")


def test_alignment_terms_still_train_the_aligner_and_values_do_not_change():
    losses = {**CROSS_TERMS, "anatomy_align": 10.0, "motion_align": 10.0}
    values = {}
    for learns_from in ("all", "alignment_terms"):
        method, subjects = build(losses=losses, fraction=1.0, params={"aligner_learns_from": learns_from})
        batch = first_batch(method.train_streams(subjects)["labelled"], method)
        aligner, _, terms = _grads(method, batch, losses)
        assert aligner > 0
        values[learns_from] = terms
    for name, value in values["all"].items():  # the forward pass is the same; only the gradients differ
        assert torch.allclose(value, values["alignment_terms"][name], rtol=1e-5, atol=1e-6), name


def test_the_cross_outputs_keep_the_aligners_warp():
    method, subjects = build(losses={"anatomy_align": 1.0}, params={"aligner_learns_from": "alignment_terms"})
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    graph = training_graph(method, batch, with_images=False)
    for c in graph.crosses:
        assert c.grid_detached and torch.allclose(c.warped, c.aligner_view(), atol=1e-6)
