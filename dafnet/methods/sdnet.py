"""SDNet (Chartsias et al., MedIA 2019) from DAFNet's components (registry: sdnet).

The paper's SDNet-single and SDNet-multi benchmarks (Sec. IV-C): one anatomy encoder, modality
encoder, segmentor, decoder and mask critic, trained on single slices with DAFNet's own graph
and steps (:mod:`dafnet.methods.dafnet.graph`, :mod:`dafnet.methods.dafnet.steps`) on
one-modality batches, so there are no cross pairs: no aligner, no fuser, no image critics. The
terms are L_sup, L_adv^M, L_rec, KL and L_rec^z with DAFNet's weights.

* ``mode: single``: target slices (annotated subjects ``labelled``, the others ``unlabelled``);
* ``mode: multi``: slices of every modality mixed into one dataset, with one shared anatomy
  encoder (one contracting path: the modalities are not told apart, as in SDNet).

DAFNet itself cannot be given one modality (it needs n >= 2, and the recipe schema asks for two
modalities), hence this method: the recipe lists every modality, ``mode`` picks what it trains on.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from dafnet.components.keras_layers import count_trainable
from dafnet.data.augment import warp_batch
from dafnet.interfaces import (
    Facts,
    HealthSignals,
    Method,
    MethodContext,
    Params,
    Phase,
    ResultTable,
    Role,
    RoleSummary,
)
from dafnet.methods.dafnet import steps
from dafnet.methods.roles import build_role, checked, shape_text
from dafnet.methods.slice_streams import evaluation_dataset, require_labelled, single_modality_streams
from dafnet.methods.target_evaluation import (
    dice_statistics,
    dice_summary,
    dice_table,
    evaluating,
    metric_inputs,
    target_health_signals,
)


class SDNet(Method):
    """Spatial decomposition network: anatomy + modality factors, segmentation of one input (registry: sdnet)."""

    prediction_types = ("single",)
    roles = {
        "anatomy_encoder": Role("anatomy_encoder", "unet_shared_decoder", "x -> binary anatomy s"),
        "modality_encoder": Role("modality_encoder", "vae", "(x, s) -> q(z | x, s)"),
        "segmentor": Role("segmentor", "conv_head", "anatomy -> mask over L + 1 channels"),
        "decoder": Role("decoder", "film", "(anatomy, z) -> image"),
        "discriminator": Role("discriminator", "lsgan_conv", "the mask critic"),
    }
    loss_weights = {"sup": 10.0, "adv_mask": 1.0, "rec": 1.0, "kl": 0.1, "z_rec": 1.0}

    class Params(Params):
        mode: Literal["single", "multi"] = Field(
            "single", description="single: target slices only; multi: every modality's slices mixed")
        ce_weight: float = Field(0.01, ge=0, description="cross-entropy weight inside L_sup = (1 - Dice) + w CE")
        dice_smooth: float = Field(1e-12, gt=0, description="smoothing of the soft Dice in L_sup")

    # attributes the shared DAFNet steps read
    num_candidates = 1
    target_index = 0
    aligner = None
    pairing_head = None
    image_discriminators = None
    anatomy_discriminator = None

    def __init__(self, params: SDNet.Params, facts: Facts, context: MethodContext | None = None) -> None:
        super().__init__(params, facts, context)
        self.modalities = tuple(facts.require("modalities"))
        self.target = self.target_modality(self.modalities)
        self.eval_index = self.modalities.index(self.target)
        self.train_modalities = self.modalities if params.mode == "multi" else (self.target,)
        self.num_classes = facts.require("num_classes")
        self.weights = self.resolved_weights()
        self.weights["adv_image"] = 0.0  # SDNet has no image critic
        # one input stream: the anatomy encoder gets one contracting path
        f = facts.with_(modalities=("+".join(self.train_modalities),))
        self.anatomy_encoder, f = build_role(self, "anatomy_encoder", f)
        self.modality_encoder, f = build_role(self, "modality_encoder", f)
        self.z_dim = f.require("z_dim")
        self.segmentor, f = build_role(self, "segmentor", f)
        self.decoder, f = build_role(self, "decoder", f)
        self.mask_discriminator = None
        if self.weights["adv_mask"] > 0:
            self.mask_discriminator, _ = build_role(self, "discriminator", f.with_(critic_channels=self.num_classes))
        self.built_facts = f
        steps.add_loss_terms(self, params, f)

    def critics(self) -> list[nn.Module]:
        return [self.mask_discriminator] if self.mask_discriminator is not None else []

    def weight_now(self, term: str) -> float:
        """The weight of a generator term (constant: SDNet has no schedule)."""
        return self.weights[term]

    # ------------------------------------------------------------------ engine contract
    def networks(self) -> dict[str, nn.Module]:
        nets = {"anatomy_encoder": self.anatomy_encoder, "modality_encoder": self.modality_encoder,
                "segmentor": self.segmentor, "decoder": self.decoder}
        if self.mask_discriminator is not None:
            nets["mask_discriminator"] = self.mask_discriminator
        return nets

    def optimizer_groups(self) -> dict[str, list[str]]:
        groups = {"generator": ["anatomy_encoder", "modality_encoder", "segmentor", "decoder"]}
        if self.mask_discriminator is not None:
            groups["mask_discriminator"] = ["mask_discriminator"]
        return groups

    def phases(self) -> list[Phase]:
        out = []
        for stream in ("labelled", "unlabelled"):
            out.append(Phase(f"{stream}/generator", "generator", stream, partial(steps.generator_step, self)))
            if self.mask_discriminator is not None:
                out.append(Phase(f"{stream}/mask_discriminator", "mask_discriminator", stream,
                                 partial(steps.mask_critic_step, self, 0)))
        return out

    def health_signals(self) -> HealthSignals:
        return target_health_signals(self.context, self.target, self.train_modalities,
                                 ("labelled/generator/sup", "unlabelled/generator/sup"))

    def summary(self) -> list[RoleSummary]:
        """One batch-1 forward of every role, each output checked against its kind's contract."""
        h, w = self.facts.require("image_size")
        p = next(self.parameters())
        x = torch.zeros(1, self.facts.image_channels, h, w, device=p.device, dtype=p.dtype)
        f = self.built_facts

        def name(role: str) -> str:
            return self.component(role).name

        with evaluating(self):
            s = checked("anatomy encoder", name("anatomy_encoder"), self.anatomy_encoder(x, 0),
                        (1, f.require("anatomy_channels"), h, w), "anatomy")
            z = checked("modality encoder", name("modality_encoder"), self.modality_encoder(x, s),
                        (1, f.require("z_dim")), "z")
            outputs = {"anatomy_encoder": s, "modality_encoder": z,
                       "segmentor": checked("segmentor", name("segmentor"), self.segmentor(s),
                                            (1, self.num_classes + 1, h, w), "probabilities"),
                       "decoder": checked("decoder", name("decoder"), self.decoder(s, z),
                                          (1, self.facts.image_channels, h, w))}
            if self.mask_discriminator is not None:
                masks = torch.zeros(1, self.num_classes, h, w, device=p.device, dtype=p.dtype)
                outputs["mask_discriminator"] = checked("mask discriminator", name("discriminator"),
                                                        self.mask_discriminator(masks), None)
        return [RoleSummary(role, name("discriminator" if role == "mask_discriminator" else role), shape_text(out),
                            count_trainable(self.networks()[role])) for role, out in outputs.items()]

    # ------------------------------------------------------------------ data
    def train_streams(self, subjects: list) -> dict:
        streams = single_modality_streams(subjects, self.context, self.train_modalities, self.target)
        require_labelled("sdnet", streams, self.train_modalities, self.target)
        return streams

    def on_device(self, batch, stream: str):
        """``data.augment.warp: batch``: the batch's drawn rotations applied on the device."""
        return warp_batch(batch)

    def eval_dataset(self, subjects: list):
        return evaluation_dataset(subjects, self.context, self.modalities, self.target)

    # ------------------------------------------------------------------ evaluation
    def predict_slices(self, images: Tensor) -> Tensor:
        """(B, 1, H, W) -> class probabilities (B, L + 1, H, W): Seg(Enc(x))."""
        return self.segmentor(self.anatomy_encoder(images, 0).anatomy).probabilities

    def evaluation_step(self, batch) -> dict[str, Tensor]:
        with evaluating(self):
            prediction = self.predict_slices(batch["images"][:, self.eval_index, 0])
        return dice_statistics({"single": prediction}, batch, self.eval_index)

    def evaluation_summary(self, stats: dict[str, Tensor]) -> dict[str, float]:
        return dice_summary(stats, "single")

    def result_table(self, summary: dict[str, float]) -> ResultTable | None:
        return dice_table(summary, self.target, ("single",),
                             f"single: Seg(s_{self.target}), trained on {', '.join(self.train_modalities)}")

    def evaluation_inputs(self, batch) -> list:
        with evaluating(self):
            prediction = self.predict_slices(batch["images"][:, self.eval_index, 0])
        return metric_inputs({"single": prediction}, batch, self.eval_index, self.target)
