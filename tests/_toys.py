"""Tiny components registered at run time by tests of the registry, recipes and CLI, and a tiny
DAFNet recipe that trains in seconds."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from dafnet import interfaces as I


class ToySource(I.DataSource):
    """Two random subjects with modalities a, b, c."""

    class Params(I.Params):
        size: int = Field(8, ge=4, description="image size")
        subjects: int = Field(2, ge=1)

    modalities = ("a", "b", "c")
    class_names = ("fg",)

    @property
    def image_size(self):
        return (self.params.size, self.params.size)

    def load(self):
        rng = np.random.default_rng(0)
        out = []
        for i in range(self.params.subjects):
            vols = {}
            for m in self.modalities:
                img = rng.uniform(-1, 1, (3, self.params.size, self.params.size)).astype(np.float32)
                vols[m] = I.Volume(img, (img > 0).astype(np.int64), np.arange(3.0))
            out.append(I.Subject(f"toy{i}", vols))
        return out


class ToyDecoder(I.Decoder):
    """A 1x1 conv decoder."""

    class Params(I.Params):
        channels: int = Field(4, ge=1, description="hidden channels")

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self.conv = nn.Conv2d(facts.require("anatomy_channels"), 1, 1)

    def forward(self, anatomy, z):
        return torch.tanh(self.conv(anatomy))


class OtherDecoder(ToyDecoder):
    class Params(I.Params):
        depth: int = Field(2, ge=1)


class NotADecoder:
    class Params(I.Params):
        pass


class ToyMethod(I.Method):
    """Uses a decoder role only."""

    class Params(I.Params):
        k: int = Field(1, ge=1)

    roles = {"decoder": I.Role("decoder", "toy_decoder")}
    loss_weights = {"rec": 1.0, "kl": 0.1}

    def __init__(self, params, facts, context):
        super().__init__(params, facts, context)
        from dafnet.builder import build

        choice = self.component("decoder")
        self.decoder = build("decoder", choice.name, choice.build_params, facts.with_(anatomy_channels=3),
                             "model.decoder")

    def networks(self):
        return {"decoder": self.decoder}

    def optimizer_groups(self):
        return {"generator": ["decoder"]}

    def phases(self):
        return []

    def summary(self):
        n = sum(p.numel() for p in self.decoder.parameters() if p.requires_grad)
        return [I.RoleSummary("decoder", self.component("decoder").name, "(1, 1, 8, 8)", n)]

    def train_streams(self, subjects):
        return {}

    def eval_dataset(self, subjects):
        return []

    def evaluation_step(self, batch):
        return {}

    def evaluation_summary(self, stats):
        return {"monitor": 0.0}


def register_toys() -> None:
    from dafnet.registry import register

    register("data_source", "toy_source", ToySource)
    register("decoder", "toy_decoder", ToyDecoder)
    register("decoder", "other_decoder", OtherDecoder)
    register("method", "toy_method", ToyMethod)


TOY_RECIPE = """\
name: toy
method: toy_method
data:
  source: {name: toy_source, params: {size: 8}}
model:
  decoder: {name: toy_decoder, params: {channels: 4}}
train:
  epochs: 2
"""


TINY_DAFNET = {
    "name": "tiny",
    "method": {"name": "dafnet"},
    "data": {"source": {"name": "phantom", "params": {"subjects": 6, "slices": 3, "image_size": 32,
                                                      "modalities": ["cine", "lge"]}},
             "annotation_fraction": 0.5, "split": {"train": 0.5, "validation": 0.17, "test": 0.33}},
    "model": {
        "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": 4, "depth": 2}},
        "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
        "segmentor": {"name": "conv_head", "params": {"filters": 8}},
        "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
    },
    "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "swa_start": None},
    "output": {"tensorboard": False},
}
"""DAFNet on 6 phantom subjects at 32 px with 4-8 filters: one epoch of 2 iterations."""
