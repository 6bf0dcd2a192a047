"""A method: a set of roles filled by registered components, trained in phases.

The engine knows nothing of any particular method. It asks a method which networks
it has (one exported safetensors file per role), how they group into optimizers,
and which phases one training iteration runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn
from torch.utils.data import Dataset

from dafnet.errors import DafnetError
from dafnet.interfaces.base import Component


@dataclass(frozen=True)
class Role:
    """A slot of a method that a registered component fills."""

    kind: str
    """Registry kind, e.g. ``decoder``."""
    default: str
    """Component name used when the recipe does not name one."""
    description: str = ""


@dataclass(frozen=True)
class ComponentChoice:
    """The component a recipe puts in a role (``model.<role>``): its registry name and params."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    validated: Any = field(default=None, compare=False, repr=False)
    """The component's ``Params`` object when the recipe's resolution already validated ``params``
    (the builder then takes it as it is, so params are validated once); None otherwise."""

    @property
    def build_params(self) -> Any:
        """What the builder takes: :attr:`validated`, else the plain :attr:`params`."""
        return self.validated if self.validated is not None else self.params


@dataclass(frozen=True)
class MethodContext:
    """What a method reads of its recipe, built once from the resolved recipe
    (:func:`dafnet.assemble.method_context`); a method never sees the recipe itself.

    The defaults are what a method gets without a recipe (a test building one by hand). Shapes
    and the modalities are not here: they are :class:`~dafnet.interfaces.facts.Facts`.
    """

    method: str = "method"
    """The method's registry name (``method.name``), for messages."""
    target: str | None = None
    """The modality segmented and evaluated (``data.target``); None: the last modality."""
    components: dict[str, ComponentChoice] = field(default_factory=dict)
    """Role -> the recipe's component (``model:``); a role missing here gets its default."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """Loss term -> weight (``losses:``); a term missing here keeps the method's default."""
    annotation_fraction: float = 1.0
    """Fraction of training subjects whose target masks are used (``data.annotation_fraction``)."""
    annotation_seed: int = 0
    """Seed of the annotated-subject draw (``data.annotation_seed``)."""
    rotation_degrees: float = 0.0
    """Training augmentation: a random rotation in +-degrees, shared within a sample
    (``data.augment.rotation_degrees``)."""
    misalignment_degrees: float = 0.0
    """Training augmentation: each non-target modality's own extra rotation in +-degrees
    (``data.augment.misalignment_degrees``)."""
    misalignment_shift: float = 0.0
    """Training augmentation: each non-target modality's own extra shift, a fraction of the slice
    size (``data.augment.misalignment_shift``)."""
    augment_warp: str = "sample"
    """Where training samples are warped (``data.augment.warp``): ``sample``, as each is loaded;
    ``batch``, the collated batch on the training device, in the method's :meth:`Method.on_device`."""
    slices_device: str | None = None
    """Where the training datasets hold the training subjects' slices: the training device when
    ``data.slices_on_device`` is on (the engine fills it in), None for host memory."""
    seed: int = 0
    """``train.seed``: the seed of sampling, augmentation and pairing draws."""


@dataclass
class LossOutput:
    total: Tensor
    """The weighted sum that is back-propagated."""
    terms: dict[str, Tensor]
    """Each named (unweighted, detached) term, for logging."""


@dataclass
class Phase:
    """One optimisation step of an iteration."""

    name: str
    group: str
    """The optimizer group this phase trains; every other group is frozen during it."""
    stream: str
    """The data stream whose batch it consumes (e.g. ``labelled`` or ``unlabelled``)."""
    step: Callable[[Any, dict], LossOutput]
    """(batch, scratch) -> LossOutput. ``scratch`` is shared by the phases of one stream's
    batch (e.g. a generator phase leaves detached fakes for the discriminator phases)."""


@dataclass
class RoleSummary:
    role: str
    component: str
    output_shape: str
    trainable_parameters: int


@dataclass
class ResultTable:
    """How a method presents its evaluation summary (the final table of ``dafnet train``)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass(frozen=True)
class HealthBound:
    """A label-free ``evaluation_summary()`` key that a learning run keeps within limits the method sets."""

    key: str
    lower: float | None = None
    upper: float | None = None
    meaning: str = ""
    """What the key measures, for the failure message (e.g. "the aligner's mean displacement")."""

    def violated(self, value: float) -> bool:
        return (self.lower is not None and value < self.lower) or (self.upper is not None and value > self.upper)


@dataclass(frozen=True)
class HealthSignals:
    """What the engine's training health checks (docs/engine.md) read of a method's log rows."""

    supervised_losses: tuple[str, ...] = ()
    """Logged training keys ``<phase>/<term>`` (each checked on its own) of loss terms that fall
    while the method learns, e.g. a supervised segmentation loss. Empty: the loss checks are off."""
    validation_dice: str | None = None
    """The ``evaluation_summary()`` key of a Dice in percent (0-100) that a learning run keeps
    above ``train.health.dice_floor``. None: the Dice check is off (e.g. a model evaluated on a
    modality it never saw labels of, whose chance-level Dice is the expected result)."""
    bounds: tuple[HealthBound, ...] = ()
    """Label-free validation keys with their limits (e.g. how much of the image a representation
    covers): each outside its limits for ``train.health.patience_epochs`` validated epochs in a row,
    after the grace epochs, fails the run. They catch a collapse that labels would show only where
    there are none (a target without labels)."""


class Method(Component, nn.Module, ABC):
    """Built as ``Cls(params, facts, context)``: ``context`` is the :class:`MethodContext` of the
    resolved recipe (the target, the role components, the loss weights, the sampling settings)."""

    roles: ClassVar[dict[str, Role]] = {}
    """The roles a recipe fills under ``model:``; each maps to a registry kind."""
    loss_weights: ClassVar[dict[str, float]] = {}
    """Named loss terms and their default weights (recipe ``losses:`` overrides them)."""
    prediction_types: ClassVar[tuple[str, ...]] = ()
    """The prediction types its evaluation reports (e.g. ``single``, ``fused``); an experiment
    spec's ``predictions`` are checked against them. Empty: not declared, not checked.
    ``aligned_copy`` declares that :meth:`evaluation_inputs` also gives the references
    ``copy_<m>`` and ``aligned_copy_<m>`` (and, with coordinates, ``alignment_<m>``), which
    ``dafnet experiment`` records per volume (DAFNet's)."""

    def __init__(self, params, facts, context: MethodContext | None = None) -> None:
        nn.Module.__init__(self)
        self.params = params
        self.facts = facts
        self.context = context if context is not None else MethodContext()

    def component(self, role: str) -> ComponentChoice:
        """The component of ``role``: the recipe's, or the role's default."""
        return self.context.components.get(role) or ComponentChoice(self.roles[role].default)

    def resolved_weights(self) -> dict[str, float]:
        """The method's default loss weights (:attr:`loss_weights`), overridden by the recipe's."""
        return {**self.loss_weights, **self.context.loss_weights}

    def target_modality(self, modalities: tuple[str, ...]) -> str:
        """The context's target (default: the last of ``modalities``), checked to be one of them."""
        target = self.context.target or modalities[-1]
        if target not in modalities:
            raise DafnetError(f"target {target!r} is not one of the modalities {modalities}")
        return target

    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Role name -> network. Each is exported as ``export/<role>.safetensors``."""

    @abstractmethod
    def optimizer_groups(self) -> dict[str, list[str]]:
        """Optimizer group name -> the roles it updates."""

    @abstractmethod
    def phases(self) -> list[Phase]:
        """The phases of one training iteration, in order."""

    def start_epoch(self, epoch: int) -> None:
        """Called by the engine before each training epoch (1-based), the first epoch of a resumed
        run included; a method with epoch-dependent behaviour (a loss-weight schedule) sets it here.
        The default does nothing."""

    def health_signals(self) -> HealthSignals:
        """The loss terms and the validation Dice the training health checks watch. The default
        declares none: only non-finite losses and monitor stop a run."""
        return HealthSignals()

    @abstractmethod
    def summary(self) -> list[RoleSummary]:
        """Per role: component, output shape, trainable parameter count (no training)."""

    # ------------------------------------------------------------------ data
    @abstractmethod
    def train_streams(self, subjects: list) -> dict[str, Dataset]:
        """Stream name -> map-style dataset of training samples from the training subjects.

        Phase.stream names index this dict. An empty dataset switches its phases off
        (e.g. no ``labelled`` stream at 0% target annotations). The engine makes one
        DataLoader per stream; an epoch is ceil(max(len) / batch) iterations and the shorter
        streams cycle.
        """

    @abstractmethod
    def eval_dataset(self, subjects: list) -> Dataset:
        """A map-style dataset of evaluation samples (validation or test subjects)."""

    def collate(self, samples: list) -> Any:
        """Collate function of every DataLoader (default: torch's)."""
        from torch.utils.data import default_collate

        return default_collate(samples)

    def on_device(self, batch: Any, stream: str) -> Any:
        """A training batch of ``stream`` once it is on the training device, before any phase sees it:
        the batch the phases get (the engine calls it under ``torch.no_grad``, outside autocast, for
        every training batch, the SWA BatchNorm pass's included; never for evaluation batches). For
        work better done on a whole batch where it is, e.g. the augmentation's warp
        (``data.augment.warp: batch``). The default returns the batch as it is."""
        return batch

    # ------------------------------------------------------------------ evaluation
    @abstractmethod
    def evaluation_step(self, batch: Any) -> dict[str, Tensor]:
        """Per-sample statistics of one evaluation batch: each value has the batch as its
        first dimension, so the engine can gather them across processes and concatenate."""

    @abstractmethod
    def evaluation_summary(self, stats: dict[str, Tensor]) -> dict[str, float]:
        """Numbers from the concatenated statistics of a whole evaluation set. Must contain
        ``monitor``: the quantity early stopping minimises (DAFNet: 1 - fused target Dice)."""

    def result_table(self, summary: dict[str, float]) -> ResultTable | None:
        """The evaluation summary as a table for people; None prints every number as it is."""
        return None

    def evaluation_inputs(self, batch: Any) -> list:
        """The :class:`~dafnet.interfaces.metric.MetricInputs` of one evaluation batch for
        ``dafnet evaluate`` (predictions per type, factors); optional."""
        raise DafnetError(f"method {self.context.method} does not support dafnet evaluate",
                          hint="the method must implement evaluation_inputs(batch) -> list[MetricInputs]")
