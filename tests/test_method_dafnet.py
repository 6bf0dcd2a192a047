"""The DAFNet method end to end at tiny sizes: building, phases, gradients, evaluation, inference."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch
from torch.utils.data import DataLoader

from dafnet.assemble import assemble
from dafnet.components.keras_layers import count_trainable
from dafnet.config.resolve import parse_recipe, resolve
from dafnet.errors import DafnetError
from dafnet.interfaces import LossOutput, Method
from dafnet.methods.dafnet import DAFNet
from dafnet.methods.dafnet.graph import training_graph
from dafnet.registry import registry

GENERATOR_TERMS = {"sup", "adv_mask", "rec", "adv_image", "kl", "z_rec"}


def tiny_recipe(modalities=("cine", "lge"), k=1, subjects=3, slices=3, fraction=0.5, losses=None,
                rotation=20.0, size=32, base_filters=4, params=None) -> dict:
    return {
        "name": "tiny",
        "data": {"source": {"name": "phantom", "params": {"subjects": subjects, "slices": slices,
                                                          "image_size": size, "modalities": list(modalities)}},
                 "annotation_fraction": fraction, "augment": {"rotation_degrees": rotation}},
        "method": {"name": "dafnet", "params": {"num_candidates": k, **(params or {})}},
        "model": {
            "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": base_filters, "depth": 2}},
            "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
            "segmentor": {"name": "conv_head", "params": {"filters": 8}},
            "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
        },
        "losses": losses or {},
        "train": {"batch_size": 2},
    }


_SUBJECTS: dict = {}


def build(**kwargs):
    """(method, subjects) of a tiny recipe; phantom subjects are generated once per source spec."""
    torch.manual_seed(0)
    recipe = resolve(parse_recipe(tiny_recipe(**kwargs)))
    source, facts, method = assemble(recipe)
    key = repr(recipe.data.source)
    if key not in _SUBJECTS:
        _SUBJECTS[key] = source.load()
    return method, _SUBJECTS[key]


def first_batch(dataset, method, size=2):
    return next(iter(DataLoader(dataset, batch_size=size, collate_fn=method.collate)))


@pytest.fixture(scope="module")
def two():
    return build()


@pytest.fixture(scope="module")
def three():
    return build(modalities=("cine", "t2", "lge"), k=2)


# --------------------------------------------------------------------------- building
def test_the_method_reads_a_frozen_context_not_the_recipe(two):
    from dafnet.assemble import method_context

    method, _ = two
    recipe = resolve(parse_recipe(tiny_recipe()))
    assert not hasattr(method, "recipe")
    assert method.context == method_context(recipe)
    assert method.context.target == "lge" and method.context.annotation_fraction == 0.5
    assert method.context.rotation_degrees == 20.0 and method.context.seed == recipe.train.seed
    assert method.component("segmentor").params == recipe.model["segmentor"].params
    with pytest.raises(dataclasses.FrozenInstanceError):
        method.context.target = "cine"


def test_registered_with_paper_roles_and_weights(two):
    method, _ = two
    assert registry("method").get("dafnet") is DAFNet and isinstance(method, Method)
    assert DAFNet.loss_weights == {"sup": 10.0, "adv_mask": 1.0, "rec": 1.0, "adv_image": 1.0, "kl": 0.1,
                                   "z_rec": 1.0, "fused_sup": 0.0, "anatomy_align": 0.0,  # named deviations, off
                                   "translated_anatomy": 0.0, "translated_sup": 0.0, "adv_anatomy": 0.0,
                                   "contrast_anatomy": 0.0, "contrast_sup": 0.0, "contrast_align": 0.0,
                                   "motion_align": 0.0, "displacement_l2": 0.0}
    defaults = {r: role.default for r, role in DAFNet.roles.items()}
    assert defaults == {"anatomy_encoder": "unet_shared_decoder", "modality_encoder": "vae", "segmentor": "conv_head",
                        "aligner": "tps", "fuser": "max", "decoder": "film", "discriminator": "lsgan_conv",
                        "pairing_head": "dice_mlp"}
    assert method.target == "lge" and method.facts.anatomy_channels == 8 and method.facts.z_dim == 8
    assert method.mask_discriminator.in_channels == 3  # L foreground channels
    assert [d.in_channels for d in method.image_discriminators] == [1, 1]


def test_networks_groups_and_phases_are_consistent(two):
    method, _ = two
    nets = method.networks()
    assert set(nets) == {"anatomy_encoder", "modality_encoder", "segmentor", "aligner", "decoder",
                         "mask_discriminator", "image_discriminator_cine", "image_discriminator_lge"}
    groups = method.optimizer_groups()
    grouped = [r for roles in groups.values() for r in roles]
    assert sorted(grouped) == sorted(nets)  # every network in exactly one group
    assert set(groups) == {"generator", "mask_discriminator", "image_discriminator_cine", "image_discriminator_lge"}
    assert not any("discriminator" in r for r in groups["generator"])
    names = [(p.stream, p.name, p.group) for p in method.phases()]
    expected_one = ["generator", "mask_discriminator/cine", "mask_discriminator/lge",
                    "image_discriminator/cine", "image_discriminator/lge"]
    assert [n for _, n, _ in names] == [f"{s}/{e}" for s in ("labelled", "unlabelled") for e in expected_one]
    assert all(g in groups for _, _, g in names)


def test_summary_lists_roles_shapes_and_exact_parameter_counts(two):
    method, _ = two
    rows = {r.role: r for r in method.summary()}
    assert rows["anatomy_encoder"].output_shape == "1x8x32x32"
    assert rows["segmentor"].output_shape == "1x4x32x32"
    assert rows["decoder"].output_shape == "1x1x32x32"
    assert rows["modality_encoder"].output_shape == "1x8"
    assert rows["mask_discriminator"].output_shape == "1x1"
    assert rows["fuser"].trainable_parameters == 0
    assert rows["decoder"].component == "film" and rows["aligner"].component == "tps"
    for role, net in method.networks().items():
        assert rows[role].trainable_parameters == count_trainable(net)
    assert method.training  # summary leaves the mode alone


# --------------------------------------------------------------------------- streams
@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_streams_follow_the_annotation_fraction(two, fraction):
    method, subjects = two
    original = method.context
    method.context = dataclasses.replace(original, annotation_fraction=fraction)
    try:
        streams = method.train_streams(subjects)
    finally:
        method.context = original
    n_labelled = round(fraction * len(subjects))
    assert len(streams["labelled"]) == 3 * n_labelled
    assert len(streams["unlabelled"]) == 3 * (len(subjects) - n_labelled)


# --------------------------------------------------------------------------- phases
def run_stream(method, batch):
    outputs = {}
    scratch: dict = {}
    for phase in method.phases():
        if phase.stream != "labelled":
            continue
        out = phase.step(batch, scratch)
        assert isinstance(out, LossOutput) and torch.isfinite(out.total)
        assert all(torch.isfinite(v) and not v.requires_grad for v in out.terms.values())
        outputs[phase.name] = out
    return outputs


@pytest.mark.parametrize("stream", ["labelled", "unlabelled"])
def test_each_phase_returns_finite_named_terms(two, stream):
    method, subjects = two
    batch = first_batch(method.train_streams(subjects)[stream], method)
    scratch: dict = {}
    for phase in [p for p in method.phases() if p.stream == stream]:
        out = phase.step(batch, scratch)
        assert torch.isfinite(out.total) and out.total.requires_grad
        if phase.group == "generator":
            assert set(out.terms) == GENERATOR_TERMS
            weighted = sum(DAFNet.loss_weights[k] * v for k, v in out.terms.items())
            assert out.total.item() == pytest.approx(weighted.item(), rel=1e-5)
            assert {"real_masks", "fake_masks", "real_images", "fake_images"} <= set(scratch)
        elif phase.group == "mask_discriminator":
            assert set(out.terms) == {"dis_mask"}
        else:
            assert set(out.terms) == {"dis_image"}
    # Real masks: every labelled mask of every modality (the unlabelled stream keeps the source's).
    expected_reals = int(batch["labelled"][:, :, 0].sum())
    assert scratch["real_masks"].shape[0] == expected_reals > 0


def test_unlabelled_supervision_uses_only_existing_ground_truth(two):
    method, subjects = two
    streams = method.train_streams(subjects)
    lab = first_batch(streams["labelled"], method)
    unl = first_batch(streams["unlabelled"], method)
    assert bool(lab["labelled"][:, 1].all()) and not bool(unl["labelled"][:, 1].any())
    # Hiding the target truth of a labelled batch must give the unlabelled supervision exactly.
    hidden = dict(lab, labelled=lab["labelled"].clone())
    hidden["labelled"][:, 1] = False
    torch.manual_seed(3)
    method.eval()  # deterministic forward (no z sampling, fixed BatchNorm statistics)
    try:
        from dafnet.methods.dafnet.steps import _supervised
        with torch.no_grad():
            graph = training_graph(method, hidden, with_images=False)
            part = _supervised(method, graph, hidden)
            full = _supervised(method, training_graph(method, lab, with_images=False), lab)
            seg_cine = method.supervised(graph.segmentation[0].logits, lab["masks"][:, 0, 0])
            cross_cine = [c for c in graph.crosses if c.dest == 0][0]
            cross = method.supervised(cross_cine.seg.logits, cross_cine.truth_mask)
    finally:
        method.train()
    assert part.item() == pytest.approx((seg_cine + cross).item(), rel=1e-5)
    assert full.item() > part.item()


def test_generator_gradients_reach_every_generator_network_and_no_critic(two):
    method, subjects = two
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    method.zero_grad(set_to_none=True)
    method.phases()[0].step(batch, {}).total.backward()
    nets = method.networks()
    for role in method.optimizer_groups()["generator"]:
        grads = [p.grad for p in nets[role].parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), role
    for per_modality in method.anatomy_encoder.contracting:  # both modalities' own paths
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in per_modality.parameters())
    for critic in method.critics():
        assert all(p.grad is None for p in critic.parameters())
        assert all(p.requires_grad for p in critic.parameters())  # unfrozen again


def test_critic_phases_only_train_their_critic(two):
    method, subjects = two
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    scratch: dict = {}
    phases = [p for p in method.phases() if p.stream == "labelled"]
    phases[0].step(batch, scratch)
    nets = method.networks()
    for phase in phases[1:]:
        method.zero_grad(set_to_none=True)
        phase.step(batch, scratch).total.backward()
        for role, net in nets.items():
            touched = any(p.grad is not None for p in net.parameters())
            assert touched == (role in method.optimizer_groups()[phase.group]), (phase.name, role)


def test_critic_phase_without_generator_scratch_runs_its_own_forward(two):
    method, subjects = two
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    phase = [p for p in method.phases() if p.group == "image_discriminator_lge"][0]
    out = phase.step(batch, {})
    assert torch.isfinite(out.total) and set(out.terms) == {"dis_image"}


def test_mask_critic_skips_a_batch_without_any_real_mask(two):
    method, subjects = two
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    batch = dict(batch, labelled=torch.zeros_like(batch["labelled"]))
    scratch: dict = {}
    method.phases()[0].step(batch, scratch)
    assert scratch["real_masks"].shape[0] == 0
    out = [p for p in method.phases() if p.group == "mask_discriminator"][0].step(batch, scratch)
    assert not out.total.requires_grad and out.terms == {}  # the engine takes no optimizer step


def test_zero_weights_switch_terms_and_critics_off():
    method, subjects = build(losses={"adv_image": 0, "kl": 0, "adv_mask": 0})
    assert method.mask_discriminator is None and method.image_discriminators is None
    assert set(method.optimizer_groups()) == {"generator"}
    assert [p.name for p in method.phases()] == ["labelled/generator", "unlabelled/generator"]
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    out = method.phases()[0].step(batch, {})
    assert set(out.terms) == {"sup", "rec", "z_rec"}


# --------------------------------------------------------------------------- n = 3, k > 1
def test_three_modalities_with_candidates_train_and_evaluate(three):
    method, subjects = three
    assert method.pairing_head is not None and "pairing_head" in method.optimizer_groups()["generator"]
    assert len([p for p in method.phases() if p.group == "mask_discriminator"]) == 6  # per modality, per stream
    streams = method.train_streams(subjects)
    batch = first_batch(streams["labelled"], method)
    assert batch["images"].shape == (2, 3, 2, 1, 32, 32)
    method.zero_grad(set_to_none=True)
    outputs = run_stream(method, batch)
    assert set(outputs["labelled/generator"].terms) == GENERATOR_TERMS
    outputs["labelled/generator"].total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.pairing_head.parameters())
    graph = training_graph(method, batch)
    assert len(graph.crosses) == 6  # ordered pairs
    assert all(c.weights is not None for c in graph.crosses if method.target_index in (c.source, c.dest))
    stats = method.evaluation_step(first_batch(method.eval_dataset(subjects), method, size=4))
    for kind in ("single", "deformed", "deformed_cine", "deformed_t2", "fused", "weighted"):
        assert stats[f"paper_{kind}"].shape == (4,)
    summary = method.evaluation_summary(stats)
    assert {"dice_single", "dice_fused", "dice_deformed", "dice_weighted", "monitor"} <= set(summary)


# --------------------------------------------------------------------------- evaluation and inference
def test_evaluation_summary_is_paper_dice_per_volume_and_monitor_is_one_minus_fused(two):
    method, _ = two
    stats = {
        "subject": torch.tensor([0, 0, 1, 1, 1]),
        "labelled": torch.tensor([True, True, True, True, False]),
        "paper_fused": torch.tensor([1.0, 0.5, 0.8, 0.6, 0.0]),
        # (intersection, predicted, true) pixel counts per slice, the same for each of the 3 classes.
        "overlap_fused": torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 2.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0],
                                       [5.0, 5.0, 5.0]])[:, :, None].expand(5, 3, 3),
    }
    summary = method.evaluation_summary(stats)
    # Volume 0: mean(1.0, 0.5) = 0.75; volume 1: mean(0.8, 0.6) = 0.7 (its unlabelled slice left out).
    assert summary["dice_fused"] == pytest.approx(72.5)
    assert summary["dice_fused_std"] == pytest.approx(2.5)
    assert summary["monitor"] == pytest.approx(1 - 0.725)
    # 3D Dice: volume 0 sums to 2 * 2 / (3 + 3), volume 1 to 2 * 2 / (2 + 2); mean over volumes and classes.
    assert summary["dice3d_fused"] == pytest.approx(100 * (4 / 6 + 1) / 2)


def test_evaluation_step_returns_per_sample_statistics_in_eval_mode(two):
    method, subjects = two
    batch = first_batch(method.eval_dataset(subjects), method, size=3)
    stats = method.evaluation_step(batch)
    assert method.training
    assert {"subject", "labelled", "paper_single", "paper_deformed", "paper_fused"} <= set(stats)
    assert all(v.shape[0] == 3 for v in stats.values())
    again = method.evaluation_step(batch)
    assert torch.equal(stats["paper_fused"], again["paper_fused"])  # deterministic (mu, running stats)


def test_predict_falls_back_to_single_without_other_modalities(two):
    method, subjects = two
    lge = torch.from_numpy(subjects[0].volumes["lge"].image[:2]).unsqueeze(1)
    cine = torch.from_numpy(subjects[0].volumes["cine"].image[:2]).unsqueeze(1)
    alone = method.predict({"lge": lge}, "lge")
    assert torch.equal(alone["fused"], alone["single"]) and torch.equal(alone["deformed"], alone["single"])
    both = method.predict({"lge": lge, "cine": cine})
    assert set(both) == {"single", "deformed", "deformed_cine", "fused"}
    assert torch.allclose(both["single"], alone["single"])
    assert both["fused"].shape == (2, 4, 32, 32)
    assert torch.allclose(both["fused"].sum(1), torch.ones(2, 32, 32), atol=1e-5)
    with pytest.raises(DafnetError):
        method.predict({"cine": cine}, "lge")
    with pytest.raises(DafnetError):
        method.predict({"lge": lge, "flair": lge})


def test_evaluation_with_a_missing_modality_falls_back_to_single(two):
    method, subjects = two
    subject = subjects[0]
    from dafnet.interfaces import Subject
    lonely = Subject("lonely", {"lge": subject.volumes["lge"]})
    batch = first_batch(method.eval_dataset([lonely]), method, size=3)
    assert not bool(batch["present"][:, 0].any())
    stats = method.evaluation_step(batch)
    assert torch.equal(stats["paper_fused"], stats["paper_single"])
    assert torch.equal(stats["paper_deformed"], stats["paper_single"])


# --------------------------------------------------------------------------- learning
def bn_recalibrate(method, batch):
    """Recompute BatchNorm statistics on ``batch`` (as SWA's update_bn does)."""
    norms = [m for m in method.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        training_graph(method, batch, with_images=False)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def train_iterations(method, batch, optimizers, iterations):
    for _ in range(iterations):
        scratch: dict = {}
        for phase in method.phases():
            if phase.stream != "labelled":
                continue
            optimizers[phase.group].zero_grad(set_to_none=True)
            out = phase.step(batch, scratch)
            out.total.backward()
            optimizers[phase.group].step()
    return out


def make_optimizers(method, lr):
    nets = method.networks()
    return {g: torch.optim.Adam([p for r in roles for p in nets[r].parameters()], lr=lr)
            for g, roles in method.optimizer_groups().items()}


def test_a_few_iterations_lower_the_supervised_loss(one_thread):
    method, subjects = build(subjects=1, slices=2, fraction=1.0, rotation=0.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    optimizers = make_optimizers(method, 3e-3)
    method.train()
    before = method.phases()[0].step(batch, {}).terms["sup"].item()
    train_iterations(method, batch, optimizers, 25)
    after = method.phases()[0].step(batch, {}).terms["sup"].item()
    assert after < before


@pytest.mark.slow
def test_overfits_a_few_phantom_slices(one_thread):
    """Plain Adam over the phases on 2 phantom slices reaches paper Dice > 90% (single and fused)."""
    method, subjects = build(subjects=1, slices=2, fraction=1.0, rotation=0.0, base_filters=8)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    optimizers = make_optimizers(method, 3e-3)
    method.train()
    start, best = time.time(), {}
    for _ in range(24):  # at most 600 iterations
        train_iterations(method, batch, optimizers, 25)
        bn_recalibrate(method, batch)
        summary = method.evaluation_summary(method.evaluation_step(batch))
        best = {k: max(best.get(k, 0.0), summary[f"dice_{k}"]) for k in ("single", "fused")}
        if summary["dice_single"] > 90 and summary["dice_fused"] > 90:
            break
    assert summary["dice_single"] > 90 and summary["dice_fused"] > 90, (best, time.time() - start)


def test_paper_configuration_has_the_papers_parameter_count():
    """method.md 6 at 192 px: 52,073,179 trainable parameters with L = 4 (here L = 3: the phantom's)."""
    recipe = tiny_recipe(size=192)
    recipe["model"] = {}  # every role at its paper defaults
    source, facts, method = assemble(resolve(parse_recipe(recipe)))
    counts = {role: count_trainable(net) for role, net in method.networks().items()}
    assert counts["anatomy_encoder"] == 39_214_408
    assert counts["segmentor"] == 42_181 - 65  # one class fewer: 64 + 1 weights of the 1x1 conv
    assert counts["mask_discriminator"] == 2_942_401 - 1_024  # 4 x 4 x 64 input weights of one channel
    assert counts["image_discriminator_cine"] == counts["image_discriminator_lge"] == 2_939_329
    assert sum(counts.values()) == 52_073_179 - 65 - 1_024


def test_channels_last_trains_the_same_and_exports_contiguous_weights(tmp_path, one_thread):
    """train.memory_format=channels_last changes the layout, not the arithmetic: the same run
    logs the same losses (float summation order aside), and its export loads like any other."""
    from dafnet.engine import train
    from dafnet.engine.export import load_export

    histories = {}
    for layout in ("contiguous", "channels_last"):
        recipe = tiny_recipe(subjects=4, slices=2, fraction=1.0, rotation=0.0)
        recipe["train"].update({"epochs": 2, "swa_start": None, "patience": None, "memory_format": layout})
        recipe["output"] = {"tensorboard": False, "figures": False}
        result = train(resolve(parse_recipe(recipe)), run_dir=tmp_path / layout)
        histories[layout] = result.history
        method = load_export(result.export_dir)
        assert all(p.is_contiguous() for p in method.parameters())
    checked = 0
    assert len(histories["contiguous"]) == len(histories["channels_last"]) == 2
    for a, b in zip(histories["contiguous"], histories["channels_last"]):
        for key, value in a.items():
            if key.startswith(("labelled/", "validation/")):
                if math.isnan(value):  # e.g. align_kept of an anatomy still empty: both NaN
                    assert math.isnan(b[key]), key
                else:
                    assert b[key] == pytest.approx(value, rel=1e-3, abs=1e-3), key
                checked += 1
    assert checked >= 20


def test_adversarial_warmup_scales_only_the_generators_adversarial_terms():
    """adversarial_warmup_epochs = N: scale min(1, (epoch - 1) / N) on adv_mask and adv_image; the
    paper default (0) never scales; the terms are still computed and logged unweighted."""
    method, subjects = build(fraction=1.0)
    assert method.params.adversarial_warmup_epochs == 0 and method.weight_now("adv_mask") == 1.0
    recipe = tiny_recipe(fraction=1.0)
    recipe["method"]["params"]["adversarial_warmup_epochs"] = 4
    torch.manual_seed(0)
    warm = assemble(resolve(parse_recipe(recipe)))[2]
    scales = []
    for epoch in range(1, 7):
        warm.start_epoch(epoch)
        scales.append(warm.weight_now("adv_image") / warm.weights["adv_image"])
    assert scales == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    warm.start_epoch(1)
    assert warm.weight_now("sup") == warm.weights["sup"] and warm.weight_now("adv_mask") == 0.0
    batch = first_batch(warm.train_streams(subjects)["labelled"], warm)
    torch.manual_seed(1)
    out = warm.phases()[0].step(batch, {})
    assert {"adv_mask", "adv_image"} <= set(out.terms) and out.terms["adv_mask"] > 0
    expected = sum(warm.weights[k] * v for k, v in out.terms.items() if k not in ("adv_mask", "adv_image"))
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_engine_starts_every_epoch_of_a_run_and_of_its_resumption(tmp_path, one_thread, monkeypatch):
    from dafnet.engine import train

    started = []
    monkeypatch.setattr(DAFNet, "start_epoch", lambda self, epoch: started.append(epoch))
    recipe = tiny_recipe(subjects=4, slices=2, fraction=1.0, rotation=0.0)
    recipe["train"].update({"epochs": 2, "swa_start": None, "patience": None})
    recipe["output"] = {"tensorboard": False, "figures": False}
    train(resolve(parse_recipe(recipe)), run_dir=tmp_path / "run")
    assert started == [1, 2]
    recipe["train"]["epochs"] = 3
    train(resolve(parse_recipe(recipe)), resume=tmp_path / "run")
    assert started == [1, 2, 3]


def test_aligner_warmup_leaves_the_aligner_at_the_identity_then_trains_it():
    """aligner_warmup_epochs = N: in epochs 1..N the cross terms use the unaligned anatomy and the
    aligner gets exactly zero gradients; from epoch N + 1 it gets real ones."""
    recipe = tiny_recipe(fraction=1.0)
    recipe["method"]["params"]["aligner_warmup_epochs"] = 2
    torch.manual_seed(0)
    method = assemble(resolve(parse_recipe(recipe)))[2]
    _, subjects = build(fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    generator = method.phases()[0]

    def aligner_gradients(epoch):
        method.start_epoch(epoch)
        method.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        generator.step(batch, {}).total.backward()
        return [p.grad for p in method.aligner.parameters()]

    assert not method.aligning
    during = aligner_gradients(2)
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in during)
    with torch.no_grad():
        graph = training_graph(method, batch)
    assert graph.crosses[0].source == 0 and graph.crosses[0].dest == method.target_index
    torch.testing.assert_close(graph.crosses[0].seg.probabilities, graph.segmentation[0].probabilities)
    after = aligner_gradients(3)
    assert method.aligning and any(torch.count_nonzero(g) > 0 for g in after)


def test_identity_aligner_trains_with_swa_and_exports(tmp_path, one_thread):
    """The "no STN" ablation (model.aligner=identity) has a network without parameters; SWA and
    the export handle it."""
    from dafnet.engine import train
    from dafnet.engine.export import load_export

    recipe = tiny_recipe(subjects=4, slices=2, fraction=0.5, rotation=0.0)
    recipe["model"]["aligner"] = {"name": "identity"}
    recipe["train"].update({"epochs": 2, "swa_start": 1, "patience": None})
    recipe["output"] = {"tensorboard": False, "figures": False}
    result = train(resolve(parse_recipe(recipe)), run_dir=tmp_path / "run")
    assert result.epochs_run == 2
    method = load_export(result.export_dir)
    assert sum(p.numel() for p in method.aligner.parameters()) == 0


def test_fused_supervision_is_the_supervised_loss_of_the_fused_pairs():
    # losses.fused_sup (a named deviation, off by default): L_sup of Seg(Fuse(s_j, Align(s_i -> s_j)))
    # against j's mask, only where j has ground truth; its gradient reaches the segmentor.
    method, subjects = build(losses={"fused_sup": 10.0})
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    out = method.phases()[[p.name for p in method.phases()].index("unlabelled/generator")].step(batch, {})
    assert "fused_sup" in out.terms and torch.isfinite(out.terms["fused_sup"])
    from dafnet.methods.dafnet.steps import _fused_supervised
    method.eval()
    try:
        with torch.no_grad():
            graph = training_graph(method, batch, with_images=False)
            value = _fused_supervised(method, graph)
            onto_cine = [c for c in graph.crosses if c.dest == 0][0]  # the target (lge) has no truth here
            fused = method.fuser([graph.anatomy[0], onto_cine.warped])
            expected = method.supervised(method.segmentor(fused).logits, batch["masks"][:, 0, 0])
    finally:
        method.train()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "fused_sup" not in build()[0].phases()[0].step(
        first_batch(build()[0].train_streams(subjects)["labelled"], build()[0]), {}).terms


@pytest.mark.parametrize("detach", [False, True])
def test_fused_supervision_reaches_the_aligner_unless_the_warped_anatomy_is_detached(detach):
    # method.params.fused_sup_detach_warped: the term then teaches the segmentor only to read fused anatomies;
    # the aligner (and the unlabelled anatomy it warps) get no gradient from it.
    method, subjects = build(losses={"fused_sup": 10.0}, params={"fused_sup_detach_warped": detach},
                             rotation=0.0)
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    from dafnet.methods.dafnet.steps import _fused_supervised
    with torch.no_grad():
        for p in method.aligner.parameters():  # off the identity, so its gradient is not zero by symmetry
            p.add_(0.01 * torch.randn_like(p))
    method.zero_grad(set_to_none=True)
    _fused_supervised(method, training_graph(method, batch, with_images=False)).backward()
    aligner = [p.grad for p in method.aligner.parameters()]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.segmentor.parameters())
    if detach:
        assert all(g is None or g.abs().sum() == 0 for g in aligner)
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in aligner)


def test_anatomy_alignment_is_the_l1_between_warped_and_fixed_anatomies():
    method, subjects = build(losses={"anatomy_align": 1.0})
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    out = method.phases()[[p.name for p in method.phases()].index("unlabelled/generator")].step(batch, {})
    assert "anatomy_align" in out.terms and torch.isfinite(out.terms["anatomy_align"])
    from dafnet.methods.dafnet.alignment_terms import anatomy_alignment
    method.eval()
    try:
        with torch.no_grad():
            graph = training_graph(method, batch, with_images=False)
            value = anatomy_alignment(graph)
            expected = sum((c.warped - graph.anatomy[c.dest]).abs().mean() for c in graph.crosses)
    finally:
        method.train()
    assert len(graph.crosses) == 2 and value.item() == pytest.approx(expected.item(), rel=1e-5)
    graph = training_graph(method, batch, with_images=False)  # its gradient reaches the aligner
    anatomy_alignment(graph).backward()
    assert method.aligner.localisation.head.weight.grad.abs().sum() > 0


def test_anatomy_alignment_dice_measure_makes_empty_anatomies_the_worst_match():
    from types import SimpleNamespace

    from dafnet.methods.dafnet.alignment_terms import anatomy_alignment
    from dafnet.methods.dafnet.graph import Cross

    fixed = torch.zeros(2, 4, 8, 8)
    fixed[:, 0, :4], fixed[:, 1, 4:] = 1, 1

    def cross(warped, fixed):
        return Cross(0, 1, None, None, None, None, None, None, 1, warped=warped, fixed=fixed)

    def graph(*crosses):
        return SimpleNamespace(anatomy=[fixed], crosses=list(crosses))

    empty = torch.zeros_like(fixed)
    assert anatomy_alignment(graph(cross(fixed, fixed)), "dice").item() == pytest.approx(0.0)
    for warped, target in ((empty, fixed), (fixed, empty), (empty, empty)):  # nothing to gain by emptying
        assert anatomy_alignment(graph(cross(warped, target)), "dice").item() == pytest.approx(1.0)
    # Under L1 the target emptied and the source warped out of the frame is a perfect match: the collapse.
    assert anatomy_alignment(graph(cross(empty, empty)), "l1").item() == 0.0
    shifted = torch.roll(fixed, 2, dims=2)
    assert 0 < anatomy_alignment(graph(cross(shifted, fixed)), "dice").item() < 1


def test_anatomy_alignment_trains_grid_keeps_the_anatomies_constant():
    """anatomy_align_trains: grid: the same value, but the term reaches the networks only through the
    aligner's grid: no gradient to the anatomies along the content path, so no pull towards sparser ones."""
    from types import SimpleNamespace

    from dafnet.components.aligners.thin_plate import sample
    from dafnet.methods.dafnet.alignment_terms import anatomy_alignment
    from dafnet.methods.dafnet.graph import Cross

    torch.manual_seed(0)
    moving = torch.rand(2, 4, 8, 8, requires_grad=True)
    fixed = torch.rand(2, 4, 8, 8, requires_grad=True)
    theta = torch.tensor([[1.0, 0.1, 0.05], [-0.1, 1.0, 0.0]]).expand(2, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, [2, 4, 8, 8], align_corners=False).requires_grad_()
    def graph(aligning=True):
        cross = Cross(0, 1, None, None, None, None, None, None, 1, warped=sample(moving, grid), fixed=fixed,
                      moving=moving, grid=grid, aligning=aligning)
        return SimpleNamespace(anatomy=[fixed], crosses=[cross])

    every = anatomy_alignment(graph(), "l1", "all")
    grid_only = anatomy_alignment(graph(), "l1", "grid")
    assert grid_only.item() == pytest.approx(every.item())
    grid_only.backward()
    assert moving.grad is None and fixed.grad is None and grid.grad.abs().sum() > 0
    grid.grad = None
    anatomy_alignment(graph(aligning=False), "l1", "grid").backward()  # aligner warm-up: nothing moves
    assert grid.grad.abs().sum() == 0 and moving.grad is None
    every.backward()
    assert moving.grad.abs().sum() > 0 and fixed.grad.abs().sum() > 0


def test_anatomy_align_measure_is_a_method_parameter():
    method, subjects = build(losses={"anatomy_align": 1.0},
                             params={"anatomy_align_measure": "dice", "anatomy_align_trains": "grid"})
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    out = method.phases()[[p.name for p in method.phases()].index("unlabelled/generator")].step(batch, {})
    assert 0 <= out.terms["anatomy_align"].item() <= 2  # two crosses, each in [0, 1]


def test_collapse_signals_measure_anatomy_coverage_and_aligner_displacement():
    from types import SimpleNamespace

    from dafnet.components.aligners.thin_plate import pixel_grid
    from dafnet.methods.dafnet.collapse import collapse_bounds, collapse_statistics, collapse_summary

    anatomy = torch.zeros(2, 4, 8, 10)
    anatomy[:, 0, :4] = 1  # half the pixels covered
    base = pixel_grid(8, 10, dtype=torch.float32).expand(2, -1, -1, -1)
    shifted = base + torch.tensor([0.4, 0.0])  # 0.2 of the slice's width everywhere
    method = SimpleNamespace(modalities=("cine", "t2"))
    warped = anatomy.clone()
    warped[:, 0, :2] = 0  # the warp pushed half of the cine anatomy out of the frame
    encoded = {"anatomy": {0: anatomy, 1: torch.zeros_like(anatomy)},
               "alignment": {0: SimpleNamespace(grid=shifted, warped=warped)}}
    stats = collapse_statistics(method, {"present": torch.tensor([[True, True], [False, True]])}, encoded)
    assert stats["anatomy_coverage_cine"][0].item() == pytest.approx(0.5)
    assert torch.isnan(stats["anatomy_coverage_cine"][1])  # cine absent in sample 1
    assert torch.equal(stats["anatomy_coverage_t2"], torch.zeros(2))
    assert stats["align_displacement_cine"][0].item() == pytest.approx(0.2)
    assert stats["align_kept_cine"][0].item() == pytest.approx(0.5)
    summary = collapse_summary(stats)
    assert summary["anatomy_coverage_min"] == 0.0 and summary["align_displacement"] == pytest.approx(0.2)
    assert summary["align_kept"] == pytest.approx(0.5)
    bounds = {b.key: b for b in collapse_bounds(DAFNet.Params())}
    assert set(bounds) == {"anatomy_coverage_min", "align_kept"}  # the displacement bound is off by default
    assert bounds["anatomy_coverage_min"].violated(summary["anatomy_coverage_min"])
    assert not bounds["align_kept"].violated(summary["align_kept"]) and bounds["align_kept"].violated(0.12)
    bounds = {b.key: b for b in collapse_bounds(DAFNet.Params(health_max_displacement=0.15))}
    assert bounds["align_displacement"].violated(summary["align_displacement"])
    assert collapse_bounds(DAFNet.Params(health_min_anatomy_coverage=0, health_min_anatomy_kept=0)) == ()


def test_validation_summary_carries_the_collapse_signals():
    method, subjects = build()
    stats = method.evaluation_step(first_batch(method.eval_dataset(subjects), method, size=4))
    summary = method.evaluation_summary(stats)
    assert 0 <= summary["anatomy_coverage_min"] <= 1 and summary["align_displacement"] == pytest.approx(0, abs=1e-5)
    assert summary["align_kept"] == pytest.approx(1, abs=1e-3)  # the identity at initialisation keeps everything
    assert {"anatomy_coverage_cine", "anatomy_coverage_lge", "align_displacement_cine",
            "align_kept_cine"} <= set(summary)
    assert [b.key for b in method.health_signals().bounds] == ["anatomy_coverage_min", "align_kept"]


def test_the_mask_critic_reads_bilinearly_rotated_real_masks_by_default():
    from dafnet.methods.dafnet.steps import real_masks

    method, subjects = build()
    assert method.sample_config().soft_mask_classes == method.num_classes + 1  # the original's soft edges
    batch = first_batch(method.train_streams(subjects)["labelled"], method, size=4)
    reals = real_masks(batch, method.num_classes + 1)
    labelled = batch["labelled"][:, :, 0]
    assert torch.equal(reals, batch["soft_masks"][:, :, 0][labelled]) and reals.shape[1] == method.num_classes
    assert "dis_mask" in method.phases()[1].step(batch, {}).terms
    nearest, _ = build(params={"real_mask_rotation": "nearest"})
    assert nearest.sample_config().soft_mask_classes == 0
    assert build(losses={"adv_mask": 0})[0].sample_config().soft_mask_classes == 0  # no critic, no soft masks


def test_evaluation_reports_copy_and_aligned_copy_as_the_copy_baseline_counts_them(two):
    """The references beside the predictions (summary ``dice_copy``, ``dice_aligned_copy``, the result table):
    the cine masks as the target's prediction, as they are and moved by the aligner's grid, on every slice
    with target labels; background where the cine slice has no labels (as the ``copy`` baseline)."""
    from dafnet.components.aligners.thin_plate import sample
    from dafnet.methods.target_evaluation import evaluating
    from dafnet.metrics.dice import mean_per_volume, paper_dice_per_slice

    method, subjects = two
    batch = first_batch(method.eval_dataset(subjects), method, size=4)
    batch["labelled"][0, 0, 0] = False  # the first sample's cine slice has no labels
    stats = method.evaluation_step(batch)
    truth, masks = batch["masks"][:, 1, 0], batch["masks"][:, 0, 0].clone()
    masks[0] = 0
    copy = torch.nn.functional.one_hot(masks.long(), 4).permute(0, 3, 1, 2).float()
    with evaluating(method):
        anatomy = [method.anatomy_encoder(batch["images"][:, m, 0], m).anatomy for m in (0, 1)]
        grid = method.aligner(anatomy[0], anatomy[1]).grid
    assert torch.allclose(stats["paper_copy"], paper_dice_per_slice(copy, truth))
    assert torch.allclose(stats["paper_aligned_copy"], paper_dice_per_slice(sample(copy, grid), truth))
    summary = method.evaluation_summary(stats)
    keep = stats["labelled"].bool()
    per_volume = mean_per_volume(stats["paper_copy"][keep].numpy(), stats["subject"][keep].numpy())
    assert summary["dice_copy"] == pytest.approx(100 * sum(per_volume.values()) / len(per_volume))
    assert "dice_aligned_copy" in summary and "dice3d_copy" in summary
    rows = [row[0] for row in method.result_table(summary).rows]
    assert rows == ["single", "deformed", "fused", "copy", "aligned_copy"]


def test_evaluation_copy_equals_the_copy_baseline():
    """On the same split, DAFNet's ``copy`` reference is the ``copy`` baseline's Dice, slice by slice."""
    method, subjects = build(fraction=1.0)
    recipe = resolve(parse_recipe({**tiny_recipe(fraction=1.0), "method": {"name": "copy"}, "model": {}}))
    baseline = assemble(recipe)[2]
    dataset = method.eval_dataset(subjects)
    batch = first_batch(dataset, method, size=6)
    batch["present"][1, 0] = False  # a sample without its cine slice
    expected = baseline.evaluation_step(batch)["paper_single"]
    assert torch.allclose(method.evaluation_step(batch)["paper_copy"], expected)
