"""Training-free baselines of the paper (Sec. IV-C): ``copy`` and ``register`` (registry names).

Both predict the target slice's mask from the paired source slice's ground-truth mask (the
paper's baselines assume source masks at inference time):

* ``copy``: the source mask as it is (a lower bound that measures the misalignment);
* ``register``: the source mask moved by a 2D intensity registration of the source slice to
  the target slice with SimpleITK: affine, then B-spline, both with Mattes mutual information,
  multi-resolution, seeded random sampling (deterministic). The paper used SyN with
  cross-correlation after the affine step; B-spline + mutual information is the named deviation.

They have no networks and no phases: ``dafnet train`` skips training, writes an export (an index
without weights) and evaluates them on the test split, so ``dafnet evaluate`` reports them like
any model; ``dafnet experiment`` evaluates them directly
(:func:`dafnet.experiment.cell_evaluation.evaluate_untrained`). A sample whose
source slice has no mask (or whose subject lacks the source) predicts background only.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Method, MethodContext, Params, Phase, ResultTable, RoleSummary
from dafnet.methods.slice_streams import evaluation_dataset
from dafnet.methods.target_evaluation import dice_statistics, dice_summary, dice_table, metric_inputs


class MaskTransferBaseline(Method):
    """Predicts the target mask from the paired source mask; no training."""

    prediction_types = ("single",)
    roles = {}
    loss_weights = {}
    kind_note = ""

    class Params(Params):
        source: str | None = Field(None, description="the modality whose masks are transferred "
                                   "(default: the first non-target modality)")
        pairing: Literal["expert", "shuffled"] = Field(
            "expert", description="expert: nearest source slice; shuffled: a random slice within +-radius")
        candidate_radius: int = Field(2, ge=0, le=8, description="window of shuffled pairing (+-slices)")

    def __init__(self, params, facts: Facts, context: MethodContext | None = None) -> None:
        super().__init__(params, facts, context)
        self.modalities = tuple(facts.require("modalities"))
        self.target = self.target_modality(self.modalities)
        self.target_index = self.modalities.index(self.target)
        others = [m for m in self.modalities if m != self.target]
        source = params.source or (others[0] if others else None)
        if source is None or source not in others:
            raise DafnetError(f"{type(self).__name__.lower()}: source {source!r} must be a modality other than "
                              f"the target {self.target!r}", hint=f"modalities: {list(self.modalities)}")
        self.source, self.source_index = source, self.modalities.index(source)
        self.num_classes = facts.require("num_classes")

    # ------------------------------------------------------------------ engine contract (nothing to train)
    def networks(self) -> dict[str, nn.Module]:
        return {}

    def optimizer_groups(self) -> dict[str, list[str]]:
        return {}

    def phases(self) -> list[Phase]:
        return []

    def summary(self) -> list[RoleSummary]:
        return []

    def train_streams(self, subjects: list) -> dict:
        return {}

    def eval_dataset(self, subjects: list):
        return evaluation_dataset(subjects, self.context, self.modalities, self.target,
                                     self.params.pairing, self.params.candidate_radius)

    # ------------------------------------------------------------------ prediction
    def transfer(self, source_images: np.ndarray, target_images: np.ndarray,
                 source_masks: np.ndarray) -> np.ndarray:
        """(B, H, W) source images, target images and source masks -> (B, H, W) masks on the target."""
        raise NotImplementedError

    def predictions(self, batch: dict) -> dict[str, Tensor]:
        s, t = self.source_index, self.target_index
        has = (batch["labelled"][:, s, 0] & batch["present"][:, s]).cpu().numpy()
        masks = batch["masks"][:, s, 0].cpu().numpy()
        moved = np.zeros_like(masks)
        if has.any():
            moved[has] = self.transfer(batch["images"][:, s, 0, 0].float().cpu().numpy()[has],
                                       batch["images"][:, t, 0, 0].float().cpu().numpy()[has], masks[has])
        labels = torch.from_numpy(moved).to(batch["masks"].device).long().clamp(0, self.num_classes)
        return {"single": F.one_hot(labels, self.num_classes + 1).permute(0, 3, 1, 2).float()}

    def evaluation_step(self, batch) -> dict[str, Tensor]:
        return dice_statistics(self.predictions(batch), batch, self.target_index)

    def evaluation_summary(self, stats: dict[str, Tensor]) -> dict[str, float]:
        return dice_summary(stats, "single")

    def result_table(self, summary: dict[str, float]) -> ResultTable | None:
        return dice_table(summary, self.target, ("single",), self.kind_note.format(source=self.source))

    def evaluation_inputs(self, batch) -> list:
        return metric_inputs(self.predictions(batch), batch, self.target_index, self.target)


class CopyBaseline(MaskTransferBaseline):
    """The paired source slice's mask as the target prediction (registry: copy)."""

    kind_note = "single: the paired {source} mask, copied"

    def transfer(self, source_images, target_images, source_masks):
        return source_masks.copy()


class RegisterBaseline(MaskTransferBaseline):
    """The paired source mask moved by affine + B-spline mutual-information registration (registry: register)."""

    kind_note = "single: the paired {source} mask, moved by registering the {source} slice to the target slice"

    class Params(MaskTransferBaseline.Params):
        deformable: Literal["bspline", "none"] = Field(
            "bspline", description="deformable stage after the affine one (none: affine only)")
        histogram_bins: int = Field(32, ge=4, le=256, description="Mattes mutual information histogram bins")
        sampling_percentage: float = Field(0.5, gt=0, le=1, description="fraction of pixels sampled per iteration")
        seed: int = Field(0, ge=0, description="seed of the metric's random sampling")
        shrink_factors: tuple[int, ...] = Field((2, 1), min_length=1, description="pyramid shrink per level")
        smoothing_sigmas: tuple[float, ...] = Field((1.0, 0.0), min_length=1,
                                                    description="Gaussian smoothing (pixels) per level")
        affine_iterations: int = Field(200, ge=1, description="gradient-descent iterations per level (affine)")
        affine_learning_rate: float = Field(1.0, gt=0, description="regular-step gradient descent step")
        bspline_mesh: int = Field(4, ge=1, le=32, description="B-spline control-point mesh cells per side")
        bspline_iterations: int = Field(100, ge=1, description="L-BFGS-B iterations per level (B-spline)")
        threads: int = Field(1, ge=1, description="SimpleITK threads (1 keeps the result reproducible)")

    def __init__(self, params, facts: Facts, context: MethodContext | None = None) -> None:
        super().__init__(params, facts, context)
        if len(params.shrink_factors) != len(params.smoothing_sigmas):
            raise DafnetError("register: shrink_factors and smoothing_sigmas need one entry per level",
                              hint=f"got {list(params.shrink_factors)} and {list(params.smoothing_sigmas)}")
        try:
            import SimpleITK  # noqa: F401
        except ImportError as exc:
            raise DafnetError("the register baseline needs SimpleITK",
                              hint="pip install 'dafnet[registration]' (or pip install SimpleITK)") from exc

    def _registration(self):
        import SimpleITK as sitk

        p = self.params
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(p.histogram_bins)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        # SimpleITK reads seed 0 as "seed from the wall clock": shift ours by one to stay reproducible.
        reg.SetMetricSamplingPercentage(p.sampling_percentage, p.seed + 1)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetShrinkFactorsPerLevel(list(p.shrink_factors))
        reg.SetSmoothingSigmasPerLevel(list(p.smoothing_sigmas))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetNumberOfThreads(p.threads)
        return reg

    def transform(self, fixed_array: np.ndarray, moving_array: np.ndarray):
        """The SimpleITK transform mapping target (fixed) points to source (moving) points."""
        import SimpleITK as sitk

        p = self.params
        fixed = sitk.GetImageFromArray(np.ascontiguousarray(fixed_array, dtype=np.float32))
        moving = sitk.GetImageFromArray(np.ascontiguousarray(moving_array, dtype=np.float32))
        reg = self._registration()
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=p.affine_learning_rate, minStep=1e-4,
                                                     numberOfIterations=p.affine_iterations,
                                                     gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(2),
                                                    sitk.CenteredTransformInitializerFilter.GEOMETRY)
        reg.SetInitialTransform(initial, inPlace=False)
        affine = reg.Execute(fixed, moving)
        composite = sitk.CompositeTransform(affine)
        if p.deformable == "bspline":
            reg = self._registration()
            reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=p.bspline_iterations)
            reg.SetMovingInitialTransform(affine)
            reg.SetInitialTransform(sitk.BSplineTransformInitializer(fixed, [p.bspline_mesh] * 2), inPlace=True)
            composite.AddTransform(reg.Execute(fixed, moving))
        return composite

    def transfer(self, source_images, target_images, source_masks):
        import SimpleITK as sitk

        # Every SimpleITK filter (initialiser, B-spline setup, resampling) on params.threads threads,
        # not only the registration's metric: multi-threaded runs are not reproducible.
        previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self.params.threads)
        try:
            out = np.empty_like(source_masks)
            for i, (moving, fixed, mask) in enumerate(zip(source_images, target_images, source_masks)):
                try:
                    transform = self.transform(fixed, moving)
                except RuntimeError as exc:  # e.g. a constant slice: nothing to register
                    warnings.warn(f"register: registration failed, the mask is copied ({exc})", stacklevel=2)
                    out[i] = mask
                    continue
                reference = sitk.GetImageFromArray(np.ascontiguousarray(fixed, dtype=np.float32))
                moved = sitk.Resample(sitk.GetImageFromArray(mask.astype(np.int32)), reference, transform,
                                      sitk.sitkNearestNeighbor, 0, sitk.sitkInt32)
                out[i] = sitk.GetArrayFromImage(moved)
            return out
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
