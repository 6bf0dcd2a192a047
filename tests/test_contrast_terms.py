"""losses.contrast_anatomy and losses.contrast_sup (named deviations, docs/method.md): a labelled image in a
random contrast (random_contrast) encoded by every other modality's encoder."""

from __future__ import annotations

import pytest
import torch
from test_method_dafnet import build, first_batch

from dafnet.methods.dafnet.alignment_terms import contrast_alignment, motion_alignment
from dafnet.methods.dafnet.graph import training_graph
from dafnet.methods.dafnet.random_contrast import contrast_terms, random_contrast


def generator(method):
    return method.phases()[[p.name for p in method.phases()].index("unlabelled/generator")]


def _phantom_like(b=3, h=16, w=16):
    """A bright disc in a dark ring on a grey background, in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2).sqrt()
    image = torch.where(r < 3, 1.0, torch.where(r < 5, -0.6, 0.1)) - 0.05 * torch.rand(b, 1, h, w)
    return image.clamp(-1, 1)


def test_random_contrast_keeps_range_and_shape_and_varies_per_sample():
    torch.manual_seed(0)
    images = _phantom_like()
    out = random_contrast(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.allclose(out.amin(dim=(1, 2, 3)), torch.tensor(-1.0)) and torch.allclose(out.amax(dim=(1, 2, 3)),
                                                                                           torch.tensor(1.0))
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # each sample its own network
    assert not torch.allclose(out, images, atol=1e-2)


def test_pointwise_networks_map_each_intensity_to_one_value_and_may_invert_the_contrast():
    # 1x1 kernels only: a random non-monotonic intensity map, so pixels of one tissue keep one value.
    torch.manual_seed(1)
    images = _phantom_like(b=4).round(decimals=1)
    inverted = 0
    for _ in range(40):
        out = random_contrast(images, kernel_sizes=(1,))
        for k in range(4):  # each sample its own network
            for tissue in images[k].unique():
                assert out[k][images[k] == tissue].std() < 1e-4
        inverted += int((out[:, 0, 8, 8] < out[:, 0, 8, 4]).sum())  # disc darker than ring (ring brighter in input)
    assert 0 < inverted < 160  # the contrast is sometimes kept, sometimes inverted


def test_wider_kernels_change_texture_but_keep_the_structures_apart():
    torch.manual_seed(2)
    images = _phantom_like(b=8).round(decimals=1)
    out = random_contrast(images, kernel_sizes=(3,))
    disc, ring = images == images[0, 0, 8, 8], images == images[0, 0, 8, 4]
    within = torch.stack([out[k][disc[k]].std() for k in range(8)])
    between = torch.stack([(out[k][disc[k]].mean() - out[k][ring[k]].mean()).abs() for k in range(8)])
    assert (between > within).float().mean() >= 0.75


def test_terms_are_off_by_default_and_named_when_weighted():
    method, subjects = build()
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    assert not {"contrast_anatomy", "contrast_sup"} & set(generator(method).step(batch, {}).terms)
    method, subjects = build(losses={"contrast_anatomy": 10.0, "contrast_sup": 10.0}, fraction=1.0)
    out = generator(method).step(first_batch(method.train_streams(subjects)["labelled"], method), {})
    assert all(torch.isfinite(out.terms[k]) and out.terms[k] > 0 for k in ("contrast_anatomy", "contrast_sup"))


def test_values_are_the_l1_and_the_supervised_loss_of_the_recontrasted_image():
    method, subjects = build(losses={"contrast_anatomy": 1.0, "contrast_sup": 1.0}, fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    method.eval()
    try:
        with torch.no_grad():
            graph = training_graph(method, batch, with_images=False)
            torch.manual_seed(3)
            anatomy, sup = contrast_terms(method, graph, batch, with_sup=True)
            torch.manual_seed(3)
            expected_anatomy, expected_sup = 0.0, 0.0
            for i, j in ((0, 1), (1, 0)):
                s = method.anatomy_encoder(random_contrast(batch["images"][:, i, 0]), j).anatomy
                expected_anatomy += (s - graph.anatomy[i]).abs().mean()
                expected_sup += method.supervised(method.segmentor(s).logits, batch["masks"][:, i, 0])
    finally:
        method.train()
    assert anatomy.item() == pytest.approx(float(expected_anatomy), rel=1e-5)
    assert sup.item() == pytest.approx(float(expected_sup), rel=1e-5)


def test_gradients_reach_the_encoder_and_segmentor_only():
    method, subjects = build(losses={"contrast_anatomy": 1.0, "contrast_sup": 1.0}, fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    graph = training_graph(method, batch, with_images=False)
    method.zero_grad(set_to_none=True)
    anatomy, sup = contrast_terms(method, graph, batch, with_sup=True)
    (anatomy + sup).backward()

    def reached(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert reached(method.anatomy_encoder) and reached(method.segmentor)
    assert not reached(method.decoder) and not reached(method.modality_encoder) and not reached(method.aligner)


def test_no_direction_runs_from_an_unlabelled_modality():
    method, subjects = build(losses={"contrast_anatomy": 1.0, "contrast_sup": 1.0}, fraction=0.0)
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method)
    batch["labelled"] = torch.zeros_like(batch["labelled"])
    anatomy, sup = contrast_terms(method, training_graph(method, batch, with_images=False), batch, with_sup=True)
    assert anatomy.item() == 0.0 and sup.item() == 0.0


def test_contrast_align_trains_the_aligner_only_and_is_named_when_weighted():
    method, subjects = build(losses={"contrast_align": 10.0}, fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    out = generator(method).step(batch, {})
    assert 0 < out.terms["contrast_align"] <= 2  # 1 - soft Dice per ordered pair, two pairs
    graph = training_graph(method, batch, with_images=False)
    method.zero_grad(set_to_none=True)
    contrast_alignment(method, graph, batch).backward()

    def reached(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert reached(method.aligner)
    assert not reached(method.anatomy_encoder) and not reached(method.segmentor) and not reached(method.decoder)


def test_contrast_align_is_zero_for_a_perfect_registration():
    # With no motion drawn and an aligner that returns the identity, the moved mask is the mask itself.
    method, subjects = build(losses={"contrast_align": 1.0}, fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    assert method.context.misalignment_degrees == 0 and method.context.misalignment_shift == 0
    for p in method.aligner.parameters():
        torch.nn.init.zeros_(p)  # the TPS head's offsets are 0: the identity warp
    value = contrast_alignment(method, training_graph(method, batch, with_images=False), batch)
    assert value.item() < 0.02  # bilinear resampling of the identity grid and soft-edged reals: not exactly 0


def test_contrast_align_leaves_out_slices_without_foreground():
    """An empty mask gives a constant 1 (no gradient): the term is the mean over the slices with foreground."""
    method, subjects = build(losses={"contrast_align": 1.0}, fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    graph = training_graph(method, batch, with_images=False)
    torch.manual_seed(0)
    full = contrast_alignment(method, graph, batch)
    emptied = {**batch, "masks": batch["masks"].clone()}
    emptied["masks"][0] = 0  # sample 0: labelled, but no foreground in any modality
    torch.manual_seed(0)
    left_out = contrast_alignment(method, graph, emptied)
    assert 0 < left_out.item() <= 2 and left_out.item() != pytest.approx(full.item())
    emptied["masks"][:] = 0
    assert contrast_alignment(method, graph, emptied).item() == 0.0  # nothing to register


def test_motion_align_registers_each_labelled_anatomy_through_its_own_encoder():
    """motion_align: the image in its own contrast, moved and encoded by its own encoder; only the aligner learns,
    one term per labelled modality (not per ordered pair), and a perfect registration costs nothing."""
    method, subjects = build(losses={"motion_align": 10.0}, fraction=1.0)
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    out = generator(method).step(batch, {})
    assert 0 < out.terms["motion_align"] <= 2 and "contrast_align" not in out.terms
    graph = training_graph(method, batch, with_images=False)
    method.zero_grad(set_to_none=True)
    motion_alignment(method, graph, batch).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.aligner.parameters())
    for module in (method.anatomy_encoder, method.segmentor, method.decoder):
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.parameters())
    calls = []
    encode = method.anatomy_encoder.forward
    method.anatomy_encoder.forward = lambda x, m: calls.append(m) or encode(x, m)
    motion_alignment(method, graph, batch)
    assert calls == [0, 1]  # modality i's moved image through i's own encoder
    assert method.context.misalignment_degrees == 0  # no motion drawn: with the identity aligner, nothing to learn
    for p in method.aligner.parameters():
        torch.nn.init.zeros_(p)
    assert motion_alignment(method, graph, batch).item() < 0.02


def test_contrast_epochs_switch_the_encoders_terms_off_after_n_epochs():
    """method.params.contrast_epochs: N: contrast_anatomy and contrast_sup in epochs 1..N, not computed after;
    the other terms (motion_align here) keep their weights."""
    losses = {"contrast_anatomy": 10.0, "contrast_sup": 10.0, "motion_align": 10.0}
    method, subjects = build(losses=losses, fraction=1.0, params={"contrast_epochs": 2})
    batch = first_batch(method.train_streams(subjects)["labelled"], method)
    for epoch, on in ((1, True), (2, True), (3, False), (9, False)):
        method.start_epoch(epoch)
        terms = generator(method).step(batch, {}).terms
        assert ({"contrast_anatomy", "contrast_sup"} <= set(terms)) == on
        assert not ({"contrast_anatomy", "contrast_sup"} & set(terms)) or on
        assert method.weight_now("contrast_sup") == (10.0 if on else 0.0) and method.weight_now("motion_align") == 10.0
        assert "motion_align" in terms
    method, _ = build(losses=losses, fraction=1.0)  # 0: throughout
    method.start_epoch(500)
    assert method.weight_now("contrast_anatomy") == 10.0


def test_contrast_epochs_without_a_contrast_weight_is_a_recipe_error():
    from dafnet.errors import DafnetError

    with pytest.raises(DafnetError, match="contrast_epochs is 5 but losses.contrast_anatomy"):
        build(losses={"motion_align": 1.0}, params={"contrast_epochs": 5})
