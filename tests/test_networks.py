"""Behaviour of the DAFNet network components at tiny sizes (CPU, a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from dafnet.builder import build
from dafnet.components.anatomy import straight_through_round
from dafnet.errors import DafnetError
from dafnet.interfaces import AnatomyOutput, Facts, ModalityOutput, PairingOutput, SegmentationOutput

H = W = 32
C = 4
NZ = 3
L = 2
TINY_UNET = {"channels": C, "base_filters": 4, "depth": 2}
TINY_VAE = {"z_dim": NZ, "filters": [4, 8], "dense_units": 8}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def facts() -> Facts:
    return Facts(image_size=(H, W), modalities=("cine", "lge"), num_classes=L)


@pytest.fixture
def full_facts(facts) -> Facts:
    return facts.with_(anatomy_channels=C, z_dim=NZ)


def random_anatomy(batch: int = 2, channels: int = C, h: int = H, w: int = W) -> torch.Tensor:
    labels = torch.randint(0, channels, (batch, h, w))
    return torch.nn.functional.one_hot(labels, channels).permute(0, 3, 1, 2).float()


# --------------------------------------------------------------------------- anatomy encoder
def test_anatomy_factors_are_binary_one_hot_at_most(facts):
    encoder = build("anatomy_encoder", "unet_shared_decoder", TINY_UNET, facts)
    out = encoder(torch.randn(2, 1, H, W), 0)
    assert isinstance(out, AnatomyOutput)
    assert out.anatomy.shape == out.probabilities.shape == (2, C, H, W)
    assert out.anatomy.dtype == torch.float32
    assert set(out.anatomy.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out.anatomy, (out.probabilities > 0.5).float())
    assert out.anatomy.sum(dim=1).max() <= 1
    assert torch.allclose(out.probabilities.sum(dim=1), torch.ones(2, H, W), atol=1e-5)


def test_straight_through_round_passes_gradients_unchanged():
    p = torch.tensor([0.2, 0.5, 0.51, 0.9], requires_grad=True)
    s = straight_through_round(p)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0]
    upstream = torch.tensor([1.0, -2.0, 3.0, 4.0])
    s.backward(upstream)
    assert torch.equal(p.grad, upstream)


def _params_with_grad(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_paths_per_modality_and_shared_decoder(facts):
    encoder = build("anatomy_encoder", "unet_shared_decoder", TINY_UNET, facts)
    first, second = encoder.contracting
    assert {id(p) for p in first.parameters()}.isdisjoint(id(p) for p in second.parameters())
    assert not torch.equal(first.blocks[0][0].weight, second.blocks[0][0].weight)

    image = torch.randn(2, 1, H, W)
    outs = [encoder(image, m) for m in (0, 1)]
    assert not torch.equal(outs[0].probabilities, outs[1].probabilities)

    shared = {id(p) for p in encoder.shared_modules().parameters()}
    used = []
    for m in (0, 1):
        encoder.zero_grad(set_to_none=True)
        weights = torch.randn(2, C, H, W)
        (encoder(image, m).anatomy * weights).sum().backward()  # gradients flow through the rounding
        used.append(_params_with_grad(encoder))
        assert {id(p) for p in encoder.contracting[m].parameters()} <= used[m]
        assert {id(p) for p in encoder.contracting[1 - m].parameters()}.isdisjoint(used[m])
    assert used[0] & used[1] == shared
    assert len(list(encoder.contracting)) == 2


def test_anatomy_encoder_batchnorm_is_keras_like(facts):
    encoder = build("anatomy_encoder", "unet_shared_decoder", TINY_UNET, facts)
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(n.eps == 1e-3 and n.momentum == 0.01 for n in norms)


def test_anatomy_encoder_rejects_bad_sizes(facts):
    with pytest.raises(DafnetError, match="divisible"):
        build("anatomy_encoder", "unet_shared_decoder", TINY_UNET, facts.with_(image_size=(30, 32)))
    with pytest.raises(DafnetError, match=r"2\^depth = 16"):
        build("anatomy_encoder", "unet_shared_decoder", {}, facts.with_(image_size=(192, 114)))
    encoder = build("anatomy_encoder", "unet_shared_decoder", TINY_UNET, facts)
    with pytest.raises(DafnetError, match="modality index"):
        encoder(torch.randn(1, 1, H, W), 2)
    with pytest.raises(DafnetError, match="divisible"):
        encoder(torch.randn(1, 1, H, W - 2), 0)


# --------------------------------------------------------------------------- modality encoder
def test_vae_sampling_in_training_mean_in_evaluation(facts):
    encoder = build("modality_encoder", "vae", TINY_VAE, facts.with_(anatomy_channels=C))
    image, anatomy = torch.randn(4, 1, H, W), random_anatomy(4)
    encoder.train()
    a, b = encoder(image, anatomy), encoder(image, anatomy)
    assert isinstance(a, ModalityOutput)
    assert a.z.shape == a.mu.shape == a.logvar.shape == (4, NZ)
    assert torch.allclose(a.mu, b.mu) and not torch.allclose(a.z, b.z)
    encoder.eval()
    c = encoder(image, anatomy)
    assert torch.equal(c.z, c.mu)
    assert torch.allclose(c.mu, a.mu)


def test_vae_reparameterisation_scale(facts):
    encoder = build("modality_encoder", "vae", TINY_VAE, facts.with_(anatomy_channels=C))
    with torch.no_grad():
        encoder.logvar_head.bias.fill_(2 * torch.log(torch.tensor(0.1)).item())
        encoder.logvar_head.weight.zero_()
    encoder.train()
    out = encoder(torch.randn(512, 1, H, W), random_anatomy(512))
    assert torch.allclose((out.z - out.mu).std(), torch.tensor(0.1), rtol=0.15)


def test_vae_rejects_tiny_images(facts):
    with pytest.raises(DafnetError, match="too small"):
        build("modality_encoder", "vae", {"filters": [4, 4, 4, 4, 4]}, facts.with_(anatomy_channels=C))


# --------------------------------------------------------------------------- segmentor
def test_segmentor_outputs_background_plus_classes(full_facts):
    segmentor = build("segmentor", "conv_head", {"filters": 8}, full_facts)
    out = segmentor(random_anatomy(2))
    assert isinstance(out, SegmentationOutput)
    assert out.probabilities.shape == out.logits.shape == (2, L + 1, H, W)
    assert torch.allclose(out.probabilities, torch.softmax(out.logits, dim=1))
    with pytest.raises(DafnetError):
        segmentor(random_anatomy(2, channels=C + 1))


# --------------------------------------------------------------------------- fusers
def test_max_fuser_is_order_and_duplicate_invariant(full_facts):
    fuser = build("fuser", "max", {}, full_facts)
    a, b, c = (torch.rand(2, C, H, W) for _ in range(3))
    fused = fuser([a, b, c])
    assert fused.shape == a.shape
    assert torch.equal(fused, fuser([c, a, b]))
    assert torch.equal(fused, fuser([a, b, b, c, a]))
    assert torch.equal(fuser([a]), a)
    assert all((fused >= x).all() for x in (a, b, c))
    with pytest.raises(DafnetError):
        fuser([])
    with pytest.raises(DafnetError, match="shape"):
        fuser([a, torch.rand(2, C, H, W - 1)])


def test_mean_fuser(full_facts):
    fuser = build("fuser", "mean", {}, full_facts)
    a, b = torch.rand(2, C, H, W), torch.rand(2, C, H, W)
    assert torch.allclose(fuser([a, b]), (a + b) / 2)
    assert torch.allclose(fuser([b, a]), fuser([a, b]))


# --------------------------------------------------------------------------- decoders
def test_film_decoder_output_and_conditioning(full_facts):
    decoder = build("decoder", "film", {}, full_facts)
    anatomy, z = random_anatomy(2), torch.randn(2, NZ)
    image = decoder(anatomy, z)
    assert image.shape == (2, 1, H, W) and image.dtype == torch.float32
    assert image.abs().max() <= 1
    assert not torch.allclose(image, decoder(anatomy, torch.randn(2, NZ)))
    assert not torch.allclose(image, decoder(random_anatomy(2), z))
    with pytest.raises(DafnetError):
        decoder(anatomy, torch.randn(2, NZ + 1))


TINY_SPADE = {"block_filters": [8, 8, 4], "hidden_channels": 8}


def test_spade_decoder_output_and_conditioning(full_facts):
    decoder = build("decoder", "spade", TINY_SPADE, full_facts)
    assert decoder.stage_sizes == [(8, 8), (16, 16), (32, 32)]
    anatomy, z = random_anatomy(2), torch.randn(2, NZ)
    image = decoder(anatomy, z)
    assert image.shape == (2, 1, H, W)
    assert image.abs().max() <= 1
    assert not torch.allclose(image, decoder(anatomy, torch.randn(2, NZ)))
    assert not torch.allclose(image, decoder(random_anatomy(2), z))


def test_spade_decoder_paper_stages_and_non_square_images(full_facts):
    paper = build("decoder", "spade", {}, full_facts.with_(image_size=(192, 192)))
    assert paper.stage_sizes == [(6, 6), (12, 12), (24, 24), (48, 48), (96, 96), (192, 192)]
    bold = build("decoder", "spade", {}, full_facts.with_(image_size=(192, 114)))
    assert bold.stage_sizes[0] == (6, 4) and bold.stage_sizes[-1] == (192, 114)
    small = build("decoder", "spade", TINY_SPADE, full_facts.with_(image_size=(32, 20)))
    assert small(random_anatomy(2, h=32, w=20), torch.randn(2, NZ)).shape == (2, 1, 32, 20)
    with pytest.raises(DafnetError, match="built for"):
        small(random_anatomy(2), torch.randn(2, NZ))



def test_spade_norm_is_keras_contrib_instance_norm_over_the_whole_sample(full_facts):
    """keras-contrib InstanceNormalization(axis=None): one mean and one std per sample over C, H, W,
    (x - mean) / (std + 1e-3); the per-channel instance norm stays as norm: channel."""
    from dafnet.components.decoders.spade import SPADE, sample_norm

    x = torch.randn(2, 3, 4, 5) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2.0
    by_hand = np.empty((2, 3, 4, 5))
    for b in range(2):
        values = x[b].double().numpy()
        by_hand[b] = (values - values.mean()) / (np.sqrt(((values - values.mean()) ** 2).mean()) + 1e-3)
    torch.testing.assert_close(sample_norm(x).double(), torch.from_numpy(by_hand), rtol=1e-5, atol=1e-5)
    per_channel = torch.nn.functional.instance_norm(x, eps=1e-3)
    assert not torch.allclose(sample_norm(x), per_channel, atol=1e-2)

    anatomy = random_anatomy(2, h=4, w=5)
    faithful, channel = SPADE(3, C, 8), SPADE(3, C, 8, norm="channel")
    with torch.no_grad():
        for conv in (faithful.gamma, faithful.beta):
            conv.weight.zero_()
            conv.bias.zero_()
        channel.load_state_dict(faithful.state_dict())  # no weights in the norm: the same parameters
    torch.testing.assert_close(faithful(x, anatomy), sample_norm(x))  # gamma = beta = 0: the norm alone
    torch.testing.assert_close(channel(x, anatomy), per_channel)
    assert build("decoder", "spade", TINY_SPADE, full_facts).blocks[0].spade1.norm == "sample"


# --------------------------------------------------------------------------- discriminator
TINY_CRITIC = {"filters": [4, 8, 8, 8]}


def test_discriminator_scores_and_spectral_norm(full_facts):
    facts = full_facts.with_(image_size=(48, 48), critic_channels=L)
    critic = build("discriminator", "lsgan_conv", TINY_CRITIC, facts)
    score = critic(torch.rand(3, L, 48, 48))
    assert score.shape == (3, 1)
    assert all(parametrize.is_parametrized(conv, "weight") for conv in critic.convs)
    critic.train()
    for _ in range(30):  # power iterations run in training mode
        critic(torch.rand(1, L, 48, 48))
    for conv in critic.convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
    plain = build("discriminator", "lsgan_conv", {**TINY_CRITIC, "spectral_norm": False}, facts)
    assert not any(parametrize.is_parametrized(conv) for conv in plain.convs)


def test_discriminator_rejects_bad_inputs(full_facts):
    with pytest.raises(DafnetError, match="too small"):
        build("discriminator", "lsgan_conv", TINY_CRITIC, full_facts.with_(critic_channels=1))
    critic = build("discriminator", "lsgan_conv", TINY_CRITIC, full_facts.with_(image_size=(48, 48), critic_channels=1))
    with pytest.raises(DafnetError, match="expected input"):
        critic(torch.rand(1, 2, 48, 48))
    with pytest.raises(DafnetError, match="built for"):
        critic(torch.rand(1, 1, 64, 64))
    with pytest.raises(Exception, match="same length"):
        build("discriminator", "lsgan_conv", {"filters": [4, 8], "strides": [2]}, full_facts.with_(critic_channels=1))


# --------------------------------------------------------------------------- pairing head
def test_pairing_head_weights_and_dice_scores(full_facts):
    k = 3
    head = build("pairing_head", "dice_mlp", {}, full_facts.with_(num_candidates=k))
    target = random_anatomy(2)
    candidates = torch.stack([target, 1 - target, random_anatomy(2)], dim=1)
    out = head(target, candidates)
    assert isinstance(out, PairingOutput)
    assert out.weights.shape == out.scores.shape == (2, k)
    assert torch.allclose(out.weights.sum(dim=1), torch.ones(2))
    assert (out.weights >= 0).all()
    assert torch.allclose(out.scores[:, 0], torch.ones(2))
    assert torch.allclose(out.scores[:, 1], torch.zeros(2), atol=1e-6)
    with pytest.raises(DafnetError):
        head(target, candidates[:, :2])


# --------------------------------------------------------------------------- Keras initialisers
def test_keras_initialisers():
    import math

    from dafnet.components.keras_layers import conv2d

    he = conv2d(64, 128, 3, init="he_normal")
    sigma = math.sqrt(2 / (64 * 9))
    assert he.weight.abs().max() <= 2 * sigma  # truncated at two standard deviations
    assert he.weight.std().item() == pytest.approx(0.8796 * sigma, rel=0.03)  # std of a 2-sigma truncation
    assert torch.count_nonzero(he.bias) == 0
    glorot = conv2d(64, 128, 3)
    limit = math.sqrt(6 / (64 * 9 + 128 * 9))
    assert glorot.weight.abs().max() <= limit
    assert glorot.weight.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.03)


def test_anatomy_encoder_pads_odd_sizes_when_asked():
    from dafnet.builder import build
    from dafnet.errors import DafnetError
    from dafnet.interfaces import Facts

    facts = Facts(image_size=(32, 18), modalities=("a", "b"), num_classes=2)
    with pytest.raises(DafnetError, match="pad_to_multiple"):
        build("anatomy_encoder", "unet_shared_decoder", {"base_filters": 2, "depth": 2}, facts)
    enc = build("anatomy_encoder", "unet_shared_decoder",
                {"base_filters": 2, "depth": 2, "pad_to_multiple": True}, facts)
    out = enc(torch.randn(2, 1, 32, 18), 1)
    assert out.anatomy.shape == (2, 8, 32, 18)
    assert torch.allclose(out.probabilities.sum(1), torch.ones(2, 32, 18), atol=1e-5)
