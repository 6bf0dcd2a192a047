"""DAFNet's recipe parameters (``method.params``; docs/recipes.md lists them with their defaults)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dafnet.interfaces import Params


class DAFNetParams(Params):
    """DAFNet's ``method.params``: the paper's choices, and the named deviations (docs/method.md), off."""

    num_candidates: int = Field(1, ge=1, le=9, description="k candidate slices per pair; 1 = expert pairing "
                                "without pairing head, > 1 adds the pairing head (Sec. III-F)")
    candidate_radius: int = Field(2, ge=0, le=8, description="candidates lie within +-radius slices of the "
                                  "nearest slice")
    pairing: Literal["expert", "shuffled"] = Field(
        "expert", description="expert: nearest slice first, then (k > 1) k - 1 other slices of the window "
        "drawn at random without replacement, once per dataset (seeded), as the original; shuffled: random "
        "slice of the window (k = 1) or those candidates in random order (k > 1), as in the paper's pairing "
        "experiment")
    ce_weight: float = Field(0.01, ge=0, description="cross-entropy weight inside L_sup = (1 - Dice) + w CE")
    dice_smooth: float = Field(1e-12, gt=0, description="smoothing of the soft Dice in L_sup")
    adversarial_warmup_epochs: int = Field(
        0, ge=0, description="named deviation, not in the paper (0): the generator's adversarial weights "
        "(adv_mask, adv_image) are scaled by min(1, (epoch - 1) / N), so they are off in epoch 1 and at "
        "their recipe value from epoch N + 1; the critics train throughout. Shortens the slow start of "
        "short runs (docs/method.md)")
    aligner_warmup_epochs: int = Field(
        0, ge=0, description="named deviation, not in the paper (0): in training epochs 1..N the cross terms "
        "use the unaligned anatomy (the aligner's output is multiplied by 0, so it gets zero gradients and "
        "stays at its initial identity); from epoch N + 1 the aligner trains as usual. Lets the anatomies "
        "form before the aligner learns to match them. Evaluation always uses the aligner (docs/method.md)")

    aligner_learns_from: Literal["all", "alignment_terms"] = Field(
        "all", description="named deviation, not in the paper (all): what trains the aligner. all, every term "
        "its output reaches (the cross masks, cross images and their critics, and the alignment terms); "
        "alignment_terms, only the terms written for it (losses.anatomy_align, motion_align, contrast_align, "
        "displacement_l2): the cross terms read the warped anatomy through a constant grid, so they still train the "
        "anatomies but cannot move the aligner, and an encoder and the aligner cannot agree on a displaced anatomy "
        "(docs/method.md)")
    contrast_epochs: int = Field(
        0, ge=0, description="named deviation, not in the paper (0: throughout): the encoders' random-contrast "
        "terms (losses.contrast_anatomy, contrast_sup) act in training epochs 1..N only and are off (not computed) "
        "from epoch N + 1: they teach an unlabelled modality's encoder the labelled anatomy while it forms, and "
        "leave it to its own images after (docs/method.md)")
    anatomy_align_measure: Literal["l1", "dice"] = Field(
        "l1", description="how losses.anatomy_align compares Align(s_i -> s_j) with s_j: l1, the mean absolute "
        "difference; dice, 1 - their soft Dice over channels and pixels, under which an empty anatomy is the "
        "worst match instead of one reached by warping the other out of the frame (docs/method.md)")
    anatomy_align_trains: Literal["all", "grid"] = Field(
        "all", description="what losses.anatomy_align trains: all, both anatomies and the aligner; grid, only the "
        "aligner's sampling grid (the anatomies enter as constants), so the term cannot shrink an L1 disagreement "
        "by making the anatomies sparser (docs/method.md)")
    fused_sup_detach_warped: bool = Field(
        False, description="with losses.fused_sup: the warped other anatomy enters the fused input detached, so "
        "the term teaches the segmentor to read fused anatomies without pushing the other modality's encoder or "
        "the aligner (which it can satisfy by emptying the unlabelled anatomy; docs/method.md)")
    real_mask_rotation: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="how the mask critic's real masks are rotated by the augmentation: bilinear, "
        "their one-hot channels with soft edges (the original's); nearest, the label maps (exactly binary, a "
        "cue against the soft predicted masks). L_sup always reads the nearest-rotated label maps")
    critic_real_masks: Literal["batch", "pool"] = Field(
        "batch", description="the mask critic's real masks: batch, the labelled masks of the batch whose predicted "
        "masks are the fakes; pool, one labelled slice per sample drawn at random from the training stream's "
        "labelled slices under its own rotation, as the original draws them (docs/method.md)")
    health_min_anatomy_coverage: float = Field(
        0.05, ge=0, le=1, description="health check (train.health): fail the run when the emptiest modality's "
        "anatomy covers less than this share of the validation slices' pixels for train.health.patience_epochs "
        "validated epochs after the grace epochs (a collapse no label shows); 0 switches it off")
    health_min_anatomy_kept: float = Field(
        0.5, ge=0, le=1, description="health check: fail the run when the aligner keeps less than this share of "
        "the other modality's anatomy in the frame (sum of the warped anatomy / sum of the anatomy, validation "
        "mean) for as long: an aligner that warps the anatomy out of the frame; 0 switches it off")
    health_max_displacement: float = Field(
        0.0, ge=0, le=2, description="health check, off by default (0): fail the run when the aligner's mean "
        "displacement over the validation slices exceeds this fraction of the slice's side for as long. The mean "
        "includes the background, which a TPS moves freely: a learning paper-configuration run reached 0.16")


__all__ = ["DAFNetParams"]
