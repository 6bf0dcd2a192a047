"""The recipe schema (pydantic v2). Unknown keys are errors everywhere.

Phase one (this module) checks the skeleton: sections, types, ranges. Component
``params`` stay plain mappings here; phase two (:mod:`dafnet.config.resolve`) checks
them against each named component's own ``Params`` model from the registry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from dafnet.config.data_sections import AugmentConfig, SplitConfig
from dafnet.config.strict import Strict

FIXED_ON_RESUME: dict[str, Any] = {"fixed_on_resume": True}
"""``json_schema_extra`` of a field a resume may not change against the recipe the run's state was
saved under (docs/engine.md "Resume"); :func:`fixed_on_resume` lists them."""


def fixed_on_resume(model: type[BaseModel] | None = None, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys of ``model`` (default: :class:`Recipe`) marked :data:`FIXED_ON_RESUME`, in
    schema order; a section that is not marked itself is searched for marked fields."""
    model = Recipe if model is None else model
    keys: list[str] = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("fixed_on_resume"):
            keys.append(prefix + name)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += fixed_on_resume(field.annotation, f"{prefix}{name}.")
    return tuple(keys)


class ComponentSpec(Strict):
    """A registered component by name, with its parameters.

    In YAML either ``decoder: film`` or ``decoder: {name: film, params: {...}}``.
    """

    name: str = Field(description="registry name, or 'package.module:Class'")
    params: dict[str, Any] = Field(default_factory=dict, description="the component's Params")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        return value

    _validated: BaseModel | None = PrivateAttr(default=None)
    """The ``Params`` that phase two validated ``params`` into (None before it)."""

    @classmethod
    def validated(cls, name: str, params: BaseModel) -> ComponentSpec:
        """The spec of a component whose params phase two has validated: ``params`` as their
        defaults-filled mapping, and the ``Params`` object itself for :attr:`build_params`."""
        spec = cls(name=name, params=params.model_dump(mode="json"))
        spec._validated = params
        return spec

    @property
    def build_params(self) -> BaseModel | dict[str, Any]:
        """What the builder takes: the ``Params`` phase two validated (so they are not validated a
        second time), or the plain mapping when the spec was not resolved or was changed since."""
        validated = self._validated
        if validated is not None and validated.model_dump(mode="json") == self.params:
            return validated
        return self.params

    @property
    def is_validated(self) -> bool:
        return self._validated is not None

    def __eq__(self, other: object) -> bool:  # the validated Params are a cache, not part of the value
        if not isinstance(other, ComponentSpec):
            return NotImplemented
        return (self.name, self.params) == (other.name, other.params)

    __hash__ = None  # type: ignore[assignment]


class DataConfig(Strict):
    source: ComponentSpec = Field(description="registered data source")
    modalities: list[str] | None = Field(
        None, description="modalities to use, in order; default: all the source provides"
    )
    target: str | None = Field(
        None, description="the target modality (segmented, partly labelled); default: the last"
    )
    annotation_fraction: float = Field(
        1.0, ge=0, le=1, description="fraction of training subjects whose target masks are kept"
    )
    annotation_seed: int = Field(0, description="seed of the annotated-subject draw")
    split: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    slices_on_device: bool = Field(
        False, description="hold the training subjects' slices on the training device (copied once), so a batch "
        "is gathered there; needs augment.warp: batch and num_workers: 0 (docs/engine.md, 'The fast path')")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.modalities is not None:
            if len(self.modalities) < 2:
                raise ValueError("@modalities: give at least two modalities")
            if len(set(self.modalities)) != len(self.modalities):
                raise ValueError(f"@modalities: modalities repeat: {self.modalities}")
            if self.target is not None and self.target not in self.modalities:
                raise ValueError(f"@target: {self.target!r} is not one of modalities {self.modalities}")
        if self.slices_on_device and self.augment.warp != "batch":
            raise ValueError("@slices_on_device: slices held on the training device need augment.warp: batch "
                             "(warping them one sample at a time there is many small kernels per sample); set "
                             "data.augment.warp: batch, or slices_on_device: false")
        if self.slices_on_device and self.num_workers > 0:
            raise ValueError(f"@slices_on_device: slices held on the training device cannot be read by DataLoader "
                             f"worker processes (num_workers: {self.num_workers}; a worker cannot use the parent's "
                             "GPU tensors); set data.num_workers: 0 (with augment.warp: batch the workers have "
                             "little left to do), or slices_on_device: false")
        return self


class HealthConfig(Strict):
    """The training health checks (docs/engine.md): a run that stops learning fails instead of
    exporting a broken model. A non-finite training loss always stops a run."""

    enabled: bool = Field(True, description="run the checks below (a non-finite training loss stops a run anyway)")
    grace_epochs: int = Field(
        10, ge=0, description="epochs before the Dice and loss checks start (the non-finite check runs from epoch 1)")
    dice_floor: float = Field(
        0.02, ge=0, le=1, description="validation Dice (fraction) below which a validated epoch counts as failing; "
        "the Dice is the one the method declares (e.g. DAFNet's fused target Dice); 0 switches the check off")
    patience_epochs: int = Field(
        10, ge=1, description="consecutive validated epochs after the grace period below dice_floor that fail the run")
    loss_window_epochs: int = Field(
        3, ge=1, description="epochs averaged for the loss checks: the first ones (the start) and the latest ones")
    loss_min_fall: float = Field(
        0.05, ge=0, lt=1, description="the supervised loss's latest mean must be this fraction below its start; "
        "0 switches both loss checks off")
    loss_max_rebound: float = Field(
        0.75, gt=0, le=1, description="fail when, after falling by more than loss_min_fall, the supervised loss has "
        "climbed back at least this fraction of its fall (1: all the way back to its start)")
    decline_warning: float = Field(
        0.05, ge=0, description="warn (never fail) when the exported weights are not the best validated ones and the "
        "last validated monitor is at least this much above its best (DAFNet: 0.05 = 5 points of fused Dice): the run "
        "declined late; summary.json records it (validation_decline); 0 switches the warning off")


class TrainConfig(Strict):
    epochs: int = Field(500, ge=1, description="maximum number of epochs")
    batch_size: int = Field(6, ge=1, description="samples per batch (per process)", json_schema_extra=FIXED_ON_RESUME)
    lr: float = Field(1e-4, gt=0, description="Adam learning rate", json_schema_extra=FIXED_ON_RESUME)
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas", json_schema_extra=FIXED_ON_RESUME)
    lr_scale: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="role -> factor: that network learns at lr x factor (e.g. {aligner: 0.1}); "
        "the roles are the method's networks (the run's export/ names them); every other network at lr",
        json_schema_extra=FIXED_ON_RESUME)
    weight_decay: float = Field(0.0, ge=0, json_schema_extra=FIXED_ON_RESUME)
    iterations_per_epoch: int | None = Field(
        None, ge=1, description="cap on iterations per epoch (default: ceil(max(N_l, N_u)/batch))",
        json_schema_extra=FIXED_ON_RESUME,
    )
    gradient_accumulation_steps: int = Field(1, ge=1, json_schema_extra=FIXED_ON_RESUME)
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", json_schema_extra=FIXED_ON_RESUME)
    cpu: bool = Field(False, description="force the CPU even when a GPU is present")
    memory_format: Literal["contiguous", "channels_last"] = Field(
        "contiguous", description="layout of the networks' 4-D weights (and so of their activations); "
        "channels_last is the same arithmetic, faster for narrow convolutions on CPU (benchmarks/README.md)")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="torch.compile mode of every network, compiled in place (weights, checkpoints and "
        "exports unchanged): off (eager), default, reduce-overhead (CUDA graphs on a GPU), max-autotune; off "
        "until measured on a GPU (docs/engine.md, 'The fast path')")
    swa_start: int | None = Field(
        40, ge=0, description="epoch from which weights are averaged (SWA); null disables",
        json_schema_extra=FIXED_ON_RESUME,
    )
    validate_swa: bool = Field(
        True, description="once SWA has a snapshot, validate (and early-stop on) the SWA average with "
        "recomputed BatchNorm statistics, as the original; false: always the live weights",
        json_schema_extra=FIXED_ON_RESUME)
    export_weights: Literal["final", "best"] = Field(
        "final", description="the weights exported and tested: final (the SWA average of all snapshots when SWA has "
        "one, as the original; else the best validated epoch's, else the last) or best (the best validated epoch's: "
        "the SWA average as it was validated then, with validate_swa; a named deviation, docs/engine.md)")
    patience: int | None = Field(60, ge=1, description="early-stopping patience in epochs")
    min_delta: float = Field(0.01, ge=0, description="minimum improvement of the monitored loss",
                             json_schema_extra=FIXED_ON_RESUME)
    validate_every: int = Field(1, ge=1, description="epochs between validations", json_schema_extra=FIXED_ON_RESUME)
    seed: int = Field(0, description="seed of weights, sampling and augmentation", json_schema_extra=FIXED_ON_RESUME)
    log_every: int = Field(10, ge=1, description="iterations between log lines")
    health: HealthConfig = Field(default_factory=HealthConfig)

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_off(cls, value: Any) -> Any:
        if value is True:  # YAML reads a bare on / yes / true as true, which names no mode
            raise ValueError("true names no mode: give off, default, reduce-overhead or max-autotune")
        return "off" if value is False else value  # YAML reads a bare off (or no) as false

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _precision_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare no (accelerate's name) as false


class OutputConfig(Strict):
    root: str = Field("runs", description="folder under which run directories are created")
    name: str | None = Field(None, description="run directory name; default: recipe name + time")
    tensorboard: bool = True
    figures: bool = True

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value in {".", ".."} or "/" in value or "\\" in value):
            raise ValueError(f"must be a folder name inside output.root, not a path (got {value!r}); "
                             "put the folders in output.root")
        return value


class Recipe(Strict):
    name: str = Field("recipe", description="a short name for the run")
    description: str = ""
    method: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="dafnet"), description="registered method",
        json_schema_extra=FIXED_ON_RESUME,
    )
    data: DataConfig = Field(json_schema_extra=FIXED_ON_RESUME)
    model: dict[str, ComponentSpec] = Field(
        default_factory=dict, description="role -> component; roles are the method's",
        json_schema_extra=FIXED_ON_RESUME,
    )
    losses: dict[str, float] = Field(
        default_factory=dict, description="loss term -> weight; 0 switches a term off",
        json_schema_extra=FIXED_ON_RESUME,
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @field_validator("losses")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if v < 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0, got {bad}")
        return value

    @property
    def is_resolved(self) -> bool:
        """Whether phase two (:func:`dafnet.config.resolve.resolve`) made this recipe: its data source,
        method and every role hold their validated params."""
        specs = [self.data.source, self.method, *self.model.values()]
        return all(spec.is_validated for spec in specs)
