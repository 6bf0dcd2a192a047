"""losses.adv_anatomy (a named deviation, docs/method.md): an LS-GAN critic on the anatomy factor, the other
modalities' anatomies real and the target's fake."""

from __future__ import annotations

import pytest
import torch
from test_method_dafnet import build, first_batch

from dafnet.methods.dafnet import anatomy_critic
from dafnet.methods.dafnet.graph import training_graph


@pytest.fixture(scope="module")
def critic():
    return build(losses={"adv_anatomy": 1.0})


def test_off_by_default_with_no_network_group_or_phase():
    method, _ = build()
    assert method.anatomy_discriminator is None and "anatomy_discriminator" not in method.networks()
    assert not [p for p in method.phases() if "anatomy" in p.name]


def test_its_own_network_group_and_one_phase_per_stream(critic):
    method, _ = critic
    assert method.anatomy_discriminator.in_channels == method.facts.anatomy_channels
    assert method.optimizer_groups()["anatomy_discriminator"] == ["anatomy_discriminator"]
    assert "anatomy_discriminator" not in method.optimizer_groups()["generator"]
    assert [p.name for p in method.phases() if p.group == "anatomy_discriminator"] == [
        "labelled/anatomy_discriminator", "unlabelled/anatomy_discriminator"]
    assert method.anatomy_discriminator in method.critics()
    assert "anatomy_discriminator" in {row.role for row in method.summary()}


def test_reals_are_the_other_modalities_anatomies_and_fakes_the_targets(critic):
    method, subjects = critic
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    with torch.no_grad():
        graph = training_graph(method, batch, with_images=False)
    t = method.target_index
    assert torch.equal(anatomy_critic.anatomy_fakes(method, graph), graph.anatomy[t])
    assert torch.equal(anatomy_critic.anatomy_reals(method, graph), graph.anatomy[1 - t])


def test_generator_term_reaches_the_target_encoder_not_the_critic_and_the_step_only_the_critic(critic):
    method, subjects = critic
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    generator = [p for p in method.phases() if p.name == "unlabelled/generator"][0]
    scratch: dict = {}
    method.zero_grad(set_to_none=True)
    out = generator.step(batch, scratch)
    assert "adv_anatomy" in out.terms and torch.isfinite(out.terms["adv_anatomy"])
    out.total.backward()
    assert all(p.grad is None for p in method.anatomy_discriminator.parameters())
    target_path = method.anatomy_encoder.contracting[method.target_index]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in target_path.parameters())
    method.zero_grad(set_to_none=True)
    step = [p for p in method.phases() if p.name == "unlabelled/anatomy_discriminator"][0]
    loss = step.step(batch, scratch)
    assert set(loss.terms) == {"dis_anatomy"}
    loss.total.backward()
    touched = {role for role, net in method.networks().items() if any(p.grad is not None for p in net.parameters())}
    assert touched == {"anatomy_discriminator"}
    assert torch.isfinite(step.step(batch, {}).total)  # without the generator's scratch it runs its own forward


def test_it_ramps_in_with_the_adversarial_warmup():
    method, _ = build(losses={"adv_anatomy": 2.0}, params={"adversarial_warmup_epochs": 4})
    method.start_epoch(3)
    assert method.weight_now("adv_anatomy") == pytest.approx(1.0)
