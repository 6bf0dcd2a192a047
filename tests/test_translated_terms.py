"""losses.translated_anatomy and losses.translated_sup (named deviations, docs/method.md): one modality's
anatomy rendered in another's style, Dec(s_i, z_j) as data, encoded by j's encoder."""

from __future__ import annotations

import pytest
import torch
from test_method_dafnet import build, first_batch

from dafnet.methods.dafnet.graph import training_graph
from dafnet.methods.dafnet.steps import _translated


def generator(method):
    return method.phases()[[p.name for p in method.phases()].index("unlabelled/generator")]


def test_terms_are_off_by_default_and_named_when_weighted():
    method, subjects = build()
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    assert not {"translated_anatomy", "translated_sup"} & set(generator(method).step(batch, {}).terms)
    method, subjects = build(losses={"translated_anatomy": 10.0})
    out = generator(method).step(first_batch(method.train_streams(subjects)["unlabelled"], method), {})
    assert "translated_anatomy" in out.terms and "translated_sup" not in out.terms
    method, subjects = build(losses={"translated_anatomy": 10.0, "translated_sup": 10.0})
    out = generator(method).step(first_batch(method.train_streams(subjects)["unlabelled"], method), {})
    assert all(torch.isfinite(out.terms[k]) for k in ("translated_anatomy", "translated_sup"))


def test_values_are_the_l1_and_the_supervised_loss_of_the_reencoded_translation():
    method, subjects = build(losses={"translated_anatomy": 1.0, "translated_sup": 1.0}, fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    method.eval()
    try:
        with torch.no_grad():
            graph = training_graph(method, batch, with_images=False)
            anatomy, sup = _translated(method, graph, batch, with_sup=True)
            expected_anatomy, expected_sup = 0.0, 0.0
            for i, j in ((0, 1), (1, 0)):
                s = method.anatomy_encoder(method.decoder(graph.anatomy[i], graph.modality[j].z), j).anatomy
                expected_anatomy += (s - graph.anatomy[i]).abs().mean()
                expected_sup += method.supervised(method.segmentor(s).logits, batch["masks"][:, i, 0])
    finally:
        method.train()
    assert anatomy.item() == pytest.approx(float(expected_anatomy), rel=1e-5)
    assert sup.item() == pytest.approx(float(expected_sup), rel=1e-5)


def test_gradients_reach_the_encoder_and_segmentor_but_not_the_decoder_or_the_source_anatomy():
    # The rendered image is data (no gradient into the decoder, nor into z); s_i is the constant reference.
    method, subjects = build(losses={"translated_anatomy": 1.0, "translated_sup": 1.0}, fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    graph = training_graph(method, batch, with_images=False)
    method.zero_grad(set_to_none=True)
    anatomy, sup = _translated(method, graph, batch, with_sup=True)
    (anatomy + sup).backward()

    def reached(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert reached(method.anatomy_encoder) and reached(method.segmentor)
    assert not reached(method.decoder) and not reached(method.modality_encoder) and not reached(method.aligner)


def test_supervision_needs_labels_of_the_rendered_modality():
    method, subjects = build(losses={"translated_sup": 1.0}, fraction=0.0)
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    batch["labelled"] = torch.zeros_like(batch["labelled"])
    _, sup = _translated(method, training_graph(method, batch, with_images=False), batch, with_sup=True)
    assert sup.item() == 0.0
