"""Paper-size trainable-parameter counts (method.md section 6), built through the registry.

Paper configuration: 192x192 images, L = 4 foreground classes, 2 modalities, C = 8,
n_z = 8. Counts are Keras 'trainable params': BatchNorm contributes gamma and beta
only (its running statistics are buffers); spectral normalisation adds buffers
(u, v), not parameters. Only construction happens here, no forward pass.
"""

from __future__ import annotations

import pytest
import torch

from dafnet.builder import build
from dafnet.components.keras_layers import count_trainable
from dafnet.interfaces import Facts


@pytest.fixture(scope="module")
def facts() -> Facts:
    torch.manual_seed(0)
    base = Facts(image_size=(192, 192), modalities=("source", "target"), num_classes=4)
    return base.with_(anatomy_channels=8, z_dim=8)


def test_anatomy_encoders_both_modalities(facts):
    # per-modality contracting path 4,688,064 x 2 + shared bottleneck/expanding/1x1 29,838,280
    encoder = build("anatomy_encoder", "unet_shared_decoder", {}, facts.with_(anatomy_channels=None))
    assert encoder.declared_facts() == {"anatomy_channels": 8}
    assert count_trainable(encoder) == 39_214_408


def test_modality_encoder(facts):
    # 192 -> 95 -> 47 -> 23 -> 11 px after the unpadded stride-2 convs: Dense(11*11*128 -> 32)
    encoder = build("modality_encoder", "vae", {}, facts.with_(z_dim=None))
    assert encoder.declared_facts() == {"z_dim": 8}
    assert count_trainable(encoder) == 594_480


def test_segmentor(facts):
    assert count_trainable(build("segmentor", "conv_head", {}, facts)) == 42_181


def test_film_decoder(facts):
    assert count_trainable(build("decoder", "film", {}, facts)) == 5_841


def test_spade_decoder(facts):
    # Derived from method.md 1.6 / the original layers/spade.py (not stated in the paper):
    #   Dense(8 -> 6*6*128)                                  41,472
    #   one SPADE(f) = conv3x3(8->128) + gamma, beta conv3x3(128->f) = 9,344 + 2*(1,152 f + f)
    #   block(128,128) x 3: 2 * (SPADE(128) 304,512 + conv 147,584)   2,712,576
    #   block(128,64): SPADE(128), conv 128->64, SPADE(64), conv 64->64,
    #                  shortcut SPADE(128) + 1x1 conv without bias    884,864
    #   block(64,32)                                                   426,752
    #   block(32,16)                                                   219,968
    #   final 1x1 conv 16 -> 1                                              17
    assert count_trainable(build("decoder", "spade", {}, facts)) == 4_285_649


def test_mask_discriminator_with_spectral_norm(facts):
    # 192 -> 95 -> 46 -> 22 -> 19 px: Dense(19*19*512 -> 1)
    critic = build("discriminator", "lsgan_conv", {}, facts.with_(critic_channels=4))
    assert count_trainable(critic) == 2_942_401
    plain = build("discriminator", "lsgan_conv", {"spectral_norm": False}, facts.with_(critic_channels=4))
    assert count_trainable(plain) == 2_942_401


def test_image_discriminator(facts):
    critic = build("discriminator", "lsgan_conv", {}, facts.with_(critic_channels=1))
    assert count_trainable(critic) == 2_939_329


def test_pairing_head(facts):
    # k = 3 candidates: Dense(3 -> 5) + Dense(5 -> 3)
    head = build("pairing_head", "dice_mlp", {}, facts.with_(num_candidates=3))
    assert count_trainable(head) == 3 * 5 + 5 + 5 * 3 + 3
