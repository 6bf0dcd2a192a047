"""The DAFNet method class (registry: dafnet).

Builds its networks from the recipe's roles in dependency order (facts flow from the
anatomy encoder to everything after it), defines the optimizer groups and the phases of
one iteration (method.md 3), the training streams and the evaluation. The graph, the
steps and the predictions live in :mod:`.graph`, :mod:`.steps` and :mod:`.inference`.
See docs/method.md.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from dafnet.data.augment import warp_batch
from dafnet.data.slices import PairedSliceDataset, SampleConfig, training_streams
from dafnet.data.splits import annotated_subjects
from dafnet.errors import DafnetError
from dafnet.interfaces import (
    Facts,
    HealthSignals,
    Method,
    MethodContext,
    Phase,
    ResultTable,
    Role,
    RoleSummary,
)
from dafnet.methods.dafnet import steps
from dafnet.methods.dafnet.alignment import alignment_summary
from dafnet.methods.dafnet.collapse import collapse_bounds, collapse_summary
from dafnet.methods.dafnet.inference import evaluation_statistics, predict_images
from dafnet.methods.dafnet.params import DAFNetParams
from dafnet.methods.dafnet.summary import role_summary
from dafnet.methods.roles import build_role
from dafnet.methods.target_evaluation import dice_summary, dice_table, evaluating


class DAFNet(Method):
    """Disentangle, align and fuse: multimodal, semi-supervised segmentation of a target modality."""

    prediction_types = ("single", "deformed", "fused", "weighted", "aligned_copy")
    """``aligned_copy`` (the first other modality's truth moved by the aligner) is not one of its own
    predictions: ``evaluation_inputs`` reports it per modality (``aligned_copy_<m>``, :mod:`.evaluation`)."""
    roles = {
        "anatomy_encoder": Role("anatomy_encoder", "unet_shared_decoder", "x_i -> binary anatomy s_i"),
        "modality_encoder": Role("modality_encoder", "vae", "(x, s) -> q(z | x, s)"),
        "segmentor": Role("segmentor", "conv_head", "anatomy -> mask over L + 1 channels"),
        "aligner": Role("aligner", "tps", "warps one anatomy onto another"),
        "fuser": Role("fuser", "max", "fuses the target anatomy with the warped others"),
        "decoder": Role("decoder", "film", "(anatomy, z) -> image"),
        "discriminator": Role("discriminator", "lsgan_conv",
                              "one mask critic and one image critic per modality (same spec)"),
        "pairing_head": Role("pairing_head", "dice_mlp", "weights k candidate pairs (only when k > 1)"),
    }
    loss_weights = {"sup": 10.0, "adv_mask": 1.0, "rec": 1.0, "adv_image": 1.0, "kl": 0.1, "z_rec": 1.0,
                    "fused_sup": 0.0, "anatomy_align": 0.0, "translated_anatomy": 0.0, "translated_sup": 0.0,
                    "adv_anatomy": 0.0, "contrast_anatomy": 0.0, "contrast_sup": 0.0,
                    "contrast_align": 0.0, "motion_align": 0.0, "displacement_l2": 0.0}
    """The paper's weights; ``fused_sup`` (L_sup on fused anatomies), ``anatomy_align`` (L1
    between each warped anatomy and the anatomy it was aligned to) and ``translated_anatomy`` /
    ``translated_sup`` (one modality's anatomy rendered in another's style and encoded again,
    :func:`~dafnet.methods.dafnet.steps._translated`) and ``adv_anatomy`` (a critic on the anatomies,
    :mod:`.anatomy_critic`), ``contrast_anatomy`` / ``contrast_sup`` (labelled images in random contrasts
    through the other modalities' encoders, :mod:`.random_contrast`) and ``contrast_align`` / ``motion_align``
    (the aligner under a known motion) and ``displacement_l2`` (each pair's displacement from the identity,
    :mod:`.alignment_terms`) are named deviations, off."""

    Params = DAFNetParams

    def __init__(self, params: DAFNet.Params, facts: Facts, context: MethodContext | None = None) -> None:
        super().__init__(params, facts, context)
        self.modalities = tuple(facts.require("modalities"))
        if len(self.modalities) < 2:
            raise DafnetError(f"DAFNet needs at least two modalities, got {self.modalities}")
        self.target = self.target_modality(self.modalities)
        self.target_index = self.modalities.index(self.target)
        self.num_candidates = params.num_candidates
        if self.num_candidates > 2 * params.candidate_radius + 1:
            raise DafnetError(f"num_candidates {self.num_candidates} exceeds the {2 * params.candidate_radius + 1} "
                              f"slices within +-{params.candidate_radius}", hint="raise candidate_radius")
        self.num_classes = facts.require("num_classes")
        self.weights = self.resolved_weights()
        if params.contrast_epochs and not any(self.weights[t] > 0 for t in self.CONTRAST_TERMS):
            raise DafnetError(f"method.params.contrast_epochs is {params.contrast_epochs} but losses.contrast_anatomy "
                              "and losses.contrast_sup are both 0, so it would change nothing",
                              hint="give one of them a weight, or remove contrast_epochs")
        self.epoch = 1  # the epoch being trained (start_epoch); the warm-ups derive from it
        self._build(facts.with_(num_candidates=self.num_candidates))
        steps.add_loss_terms(self, params, self.facts)

    # ------------------------------------------------------------------ building
    def _build(self, facts: Facts) -> None:
        self.anatomy_encoder, facts = build_role(self, "anatomy_encoder", facts)
        self.modality_encoder, facts = build_role(self, "modality_encoder", facts)
        self.z_dim = facts.require("z_dim")
        self.segmentor, facts = build_role(self, "segmentor", facts)
        self.aligner, facts = build_role(self, "aligner", facts)
        self.fuser, facts = build_role(self, "fuser", facts)
        self.decoder, facts = build_role(self, "decoder", facts)
        self.mask_discriminator = None
        if self.weights["adv_mask"] > 0:
            mask_facts = facts.with_(critic_channels=self.num_classes)
            self.mask_discriminator, _ = build_role(self, "discriminator", mask_facts)
        self.image_discriminators = None
        if self.weights["adv_image"] > 0:
            self.image_discriminators = nn.ModuleList(
                build_role(self, "discriminator", facts.with_(critic_channels=facts.image_channels))[0]
                for _ in self.modalities)
        self.anatomy_discriminator = None
        if self.weights["adv_anatomy"] > 0:
            anatomy_facts = facts.with_(critic_channels=facts.require("anatomy_channels"))
            self.anatomy_discriminator, _ = build_role(self, "discriminator", anatomy_facts)
        self.pairing_head = build_role(self, "pairing_head", facts)[0] if self.num_candidates > 1 else None
        self.facts = facts

    ADVERSARIAL_TERMS = ("adv_mask", "adv_image", "adv_anatomy")
    CONTRAST_TERMS = ("contrast_anatomy", "contrast_sup")

    @property
    def adversarial_scale(self) -> float:
        """Factor of the generator's adversarial weights: ramps 0 -> 1 over the adversarial warm-up."""
        warmup = self.params.adversarial_warmup_epochs
        return 1.0 if warmup == 0 else min(1.0, (self.epoch - 1) / warmup)

    @property
    def aligning(self) -> bool:
        """False during the aligner warm-up: the cross terms use the unaligned anatomy."""
        return self.epoch > self.params.aligner_warmup_epochs

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def weight_now(self, term: str) -> float:
        """The weight of a generator term in the current epoch (the recipe's, scaled during the
        adversarial warm-up; the random-contrast terms 0 after ``contrast_epochs``)."""
        scale = self.adversarial_scale if term in self.ADVERSARIAL_TERMS else 1.0
        if term in self.CONTRAST_TERMS and 0 < self.params.contrast_epochs < self.epoch:
            scale = 0.0
        return self.weights[term] * scale

    def critics(self) -> list[nn.Module]:
        out = [c for c in (self.mask_discriminator, self.anatomy_discriminator) if c is not None]
        return out + (list(self.image_discriminators) if self.image_discriminators is not None else [])

    # ------------------------------------------------------------------ engine contract
    def networks(self) -> dict[str, nn.Module]:
        nets = {"anatomy_encoder": self.anatomy_encoder, "modality_encoder": self.modality_encoder,
                "segmentor": self.segmentor, "aligner": self.aligner, "decoder": self.decoder}
        if any(True for _ in self.fuser.parameters()) or any(True for _ in self.fuser.buffers()):
            nets["fuser"] = self.fuser
        if self.pairing_head is not None:
            nets["pairing_head"] = self.pairing_head
        if self.mask_discriminator is not None:
            nets["mask_discriminator"] = self.mask_discriminator
        if self.anatomy_discriminator is not None:
            nets["anatomy_discriminator"] = self.anatomy_discriminator
        for name, critic in zip(self.modalities, self.image_discriminators or []):
            nets[f"image_discriminator_{name}"] = critic
        return nets

    def optimizer_groups(self) -> dict[str, list[str]]:
        critics = [r for r in self.networks() if "discriminator" in r]
        groups = {"generator": [r for r in self.networks() if r not in critics]}
        groups.update({r: [r] for r in critics})
        return groups

    def phases(self) -> list[Phase]:
        out = []
        for stream in ("labelled", "unlabelled"):
            out.append(Phase(f"{stream}/generator", "generator", stream, partial(steps.generator_step, self)))
            if self.mask_discriminator is not None:
                out += [Phase(f"{stream}/mask_discriminator/{m}", "mask_discriminator", stream,
                              partial(steps.mask_critic_step, self, i)) for i, m in enumerate(self.modalities)]
            if self.anatomy_discriminator is not None:
                out.append(Phase(f"{stream}/anatomy_discriminator", "anatomy_discriminator", stream,
                                 partial(steps.anatomy_critic_step, self)))
            if self.image_discriminators is not None:
                out += [Phase(f"{stream}/image_discriminator/{m}", f"image_discriminator_{m}", stream,
                              partial(steps.image_critic_step, self, i)) for i, m in enumerate(self.modalities)]
        return out

    def health_signals(self) -> HealthSignals:
        """L_sup of each stream's generator phase, the fused target Dice (the monitor's) and the label-free
        collapse bounds (:mod:`.collapse`)."""
        return HealthSignals(supervised_losses=("labelled/generator/sup", "unlabelled/generator/sup"),
                             validation_dice="dice_fused", bounds=collapse_bounds(self.params))

    def summary(self) -> list[RoleSummary]:
        """One batch-1 forward of every role, each output checked against its kind's contract
        (the engine runs this before training, so a plugin that breaks it is named at once)."""
        with evaluating(self):
            return role_summary(self)

    # ------------------------------------------------------------------ data
    def sample_config(self) -> SampleConfig:
        c = self.context
        return SampleConfig(self.modalities, self.target, self.num_candidates, self.params.candidate_radius,
                            self.params.pairing, c.rotation_degrees, c.seed,
                            misalignment_degrees=c.misalignment_degrees, misalignment_shift=c.misalignment_shift,
                            soft_mask_classes=self._soft_mask_classes(), warp=c.augment_warp,
                            real_mask_pool=self.num_classes + 1 if self._pooled_reals() else 0)

    def _pooled_reals(self) -> bool:
        return self.weights["adv_mask"] > 0 and self.params.critic_real_masks == "pool"

    def _soft_mask_classes(self) -> int:
        """L + 1 when the mask critic reads bilinearly rotated real masks, else 0."""
        soft = self.weights["adv_mask"] > 0 and self.params.real_mask_rotation == "bilinear"
        return self.num_classes + 1 if soft else 0

    def train_streams(self, subjects: list) -> dict[str, PairedSliceDataset]:
        c = self.context
        annotated = annotated_subjects([s.id for s in subjects], c.annotation_fraction, c.annotation_seed)
        return training_streams(subjects, self.sample_config(), annotated, device=c.slices_device)

    def on_device(self, batch, stream: str):
        """``data.augment.warp: batch``: the batch's drawn motions applied on the device (:func:`warp_batch`)."""
        return warp_batch(batch, self._soft_mask_classes())

    def eval_dataset(self, subjects: list) -> PairedSliceDataset:
        return PairedSliceDataset(subjects, self.sample_config(), training=False)

    # ------------------------------------------------------------------ evaluation
    def evaluation_step(self, batch) -> dict[str, Tensor]:
        with evaluating(self):
            return evaluation_statistics(self, batch)

    def evaluation_summary(self, stats: dict[str, Tensor]) -> dict[str, float]:
        """Paper Dice per volume (mean, std) and 3D Dice per prediction type; monitor = 1 - fused Dice;
        with coordinates in the data, the alignment error in mm (:mod:`.alignment`)."""
        return {**dice_summary(stats, "fused"), **alignment_summary(stats), **collapse_summary(stats)}

    def result_table(self, summary: dict[str, float]) -> ResultTable | None:
        fuser = self.component("fuser").name
        source = next(m for m in self.modalities if m != self.target)
        return dice_table(summary, self.target, ("single", "deformed", "fused", "weighted", "copy", "aligned_copy"),
                          note="single: Seg(s_target); deformed: Seg(Align(s_other -> s_target)); "
                               f"fused: Seg({fuser}(s_target, aligned others)); references, nothing learnt of the "
                               f"target: copy, the {source} masks as the {self.target}'s; aligned_copy, those masks "
                               "moved by the aligner")

    def evaluation_inputs(self, batch) -> list:
        """MetricInputs per prediction type and per modality's factors (``dafnet evaluate``; :mod:`.evaluation`)."""
        from dafnet.methods.dafnet.evaluation import evaluation_inputs

        with evaluating(self):
            return evaluation_inputs(self, batch)

    # ------------------------------------------------------------------ inference
    def predict(self, images: dict[str, Tensor], target: str | None = None) -> dict[str, Tensor]:
        """Target class probabilities per prediction type from whatever modalities are given.

        ``images``: modality name -> (B, 1, H, W) (or (B, H, W)); another modality may also be
        (B, k, 1, H, W) candidates (nearest first) for the ``weighted`` type. Missing
        modalities are left out; with none besides the target every type equals ``single``.
        """
        with evaluating(self):
            return predict_images(self, images, target or self.target)
