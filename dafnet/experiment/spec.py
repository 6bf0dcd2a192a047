"""The experiment spec (YAML): a grid of recipes x annotation fractions x folds x pairings x ablations.

```yaml
name: phantom_quick
methods:                       # row label -> a base recipe (path relative to this file, or a built-in name)
  DAFNet: {recipe: ../quickstart.yaml, predictions: [fused, single, aligned_copy]}
  DAFNet-mean: {evaluate_from: DAFNet, overrides: [model.fuser.name=mean]}   # DAFNet's weights, another fuser
  UNet-multi: {recipe: ../baselines/unet_multi.yaml}
  copy: {recipe: ../baselines/copy.yaml}
reference: DAFNet              # compared against (Wilcoxon signed-rank over matched volumes)
fractions: [1.0, 0.0]          # data.annotation_fraction of the target
folds: [0, 1, 2]               # data.split.fold
seeds: [0, 1, 2]               # train.seed of trainable methods (default: each recipe's own)
pairings: [expert]             # expert | automated | random
ablations: {no_rec: [losses.rec=0]}   # label -> overrides, applied to the reference method only
overrides: [train.epochs=5]    # applied to every cell
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dafnet.config.errors import RecipeError, RecipeIssue, issues_from_validation
from dafnet.config.loading import evaluation_override_issues
from dafnet.errors import DafnetError

Pairing = Literal["expert", "automated", "random"]
PAIRINGS: tuple[str, ...] = ("expert", "automated", "random")
FULL = "all terms"
"""The ablation label of the un-ablated reference method."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _distinct_seeds(value: list[int]) -> list[int]:
    if len(set(value)) != len(value) or any(s < 0 for s in value):
        raise ValueError(f"seeds must be distinct integers >= 0, got {value}")
    return value


Seeds = Annotated[list[int], Field(min_length=1), AfterValidator(_distinct_seeds)]
"""``train.seed`` values of an experiment's cells."""


class MethodEntry(_Strict):
    recipe: str | None = Field(None, description="base recipe: a path (relative to the spec file) or a built-in "
                               "recipe name (or evaluate_from)")
    evaluate_from: str | None = Field(
        None, description="another method's label: this row trains nothing and evaluates that method's trained "
        "cells with its own overrides, which may only change choices without weights (e.g. model.fuser.name=mean)")
    overrides: list[str] = Field(default_factory=list, description="dotted overrides of this method's recipe "
                                 "(with evaluate_from: applied to the trained model's recipe when evaluating)")
    predictions: list[str] | None = Field(
        None, description="prediction types to tabulate (e.g. [fused, single]), each a row; aligned_copy "
        "(a method that reports it, DAFNet) adds the row of the source's truth moved by the learned aligner "
        "and the alignment table (the aligner's error against the truth, when the data carry it); default: "
        "weighted with automated pairing, else fused if the method has it, else single")
    seeds: Seeds | None = Field(None, description="train.seed values of this method's cells "
                                "(default: the spec's seeds)")
    folds: list[int] | None = Field(None, min_length=1, description="the folds this method runs, some of the "
                                    "spec's (default: all of them); the tables say which rows have fewer")

    @model_validator(mode="after")
    def _source(self) -> MethodEntry:
        if (self.recipe is None) == (self.evaluate_from is None):
            raise ValueError("give either recipe (a method to train) or evaluate_from (another method's label)")
        if self.evaluate_from is not None and self.seeds is not None:
            raise ValueError("a method with evaluate_from takes the seeds of the method it evaluates")
        if self.evaluate_from is not None and self.folds is not None:
            raise ValueError("a method with evaluate_from takes the folds of the method it evaluates")
        if self.evaluate_from is not None:
            issues = evaluation_override_issues(self.overrides)
            if issues:
                raise ValueError("with evaluate_from, " + "; ".join(str(i) for i in issues))
        return self


class ExperimentSpec(_Strict):
    name: str = Field(description="experiment name (the default output folder)")
    description: str = ""
    methods: dict[str, MethodEntry] = Field(min_length=1, description="row label -> base recipe")
    reference: str | None = Field(None, description="the method the others are tested against "
                                  "(default: the first whose recipe uses method dafnet, else the first)")
    fractions: list[float] = Field(default_factory=lambda: [1.0], min_length=1,
                                   description="target annotation fractions")
    folds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="cross-validation folds")
    seeds: Seeds | None = Field(
        None, description="train.seed values: every trainable method runs once per seed and a "
        "volume's Dice is averaged over its seeds before the tables pool volumes (default: each recipe's seed)")
    pairings: list[Pairing] = Field(default_factory=lambda: ["expert"], min_length=1)
    candidates: int = Field(3, ge=2, le=9, description="k candidates of automated pairing")
    ablations: dict[str, list[str]] = Field(default_factory=dict,
                                            description="label -> overrides of the reference method (Table IV)")
    overrides: list[str] = Field(default_factory=list, description="overrides of every cell (after the method's)")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the Wilcoxon test (asterisk)")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        bad = [f for f in value if not 0.0 <= f <= 1.0]
        if bad:
            raise ValueError(f"fractions must lie in [0, 1], got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"fractions repeat: {value}")
        return value

    @field_validator("folds")
    @classmethod
    def _folds(cls, value: list[int]) -> list[int]:
        if any(f < 0 for f in value) or len(set(value)) != len(value):
            raise ValueError(f"folds must be distinct indices >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        if self.reference is not None and self.reference not in self.methods:
            raise ValueError(f"reference {self.reference!r} is not one of the methods {list(self.methods)}")
        if FULL in self.ablations:
            raise ValueError(f"ablation label {FULL!r} is reserved for the un-ablated method")
        if len(set(self.pairings)) != len(self.pairings):
            raise ValueError(f"pairings repeat: {self.pairings}")
        for label, entry in self.methods.items():
            source = self.methods.get(entry.evaluate_from) if entry.evaluate_from is not None else None
            outside = sorted(set(entry.folds or []) - set(self.folds))
            if outside or (entry.folds and len(set(entry.folds)) != len(entry.folds)):
                raise ValueError(f"methods.{label}.folds: {entry.folds} must be distinct folds of the spec's "
                                 f"{self.folds}")
            if entry.evaluate_from is not None and (source is None or source.recipe is None):
                raise ValueError(f"methods.{label}.evaluate_from: {entry.evaluate_from!r} is not a method with a "
                                 f"recipe of this spec ({[k for k, v in self.methods.items() if v.recipe]})")
        if self.ablations and self.reference is not None and self.methods[self.reference].recipe is None:
            raise ValueError(f"reference {self.reference!r} only evaluates another method: ablations need a "
                             "reference that trains")
        return self

    def method_folds(self, label: str) -> list[int]:
        """The folds of a method's cells (an ``evaluate_from`` row: those of the method it evaluates)."""
        entry = self.methods[label]
        if entry.evaluate_from is not None:
            return self.method_folds(entry.evaluate_from)
        return list(entry.folds or self.folds)


def load_spec(path: str | Path) -> tuple[ExperimentSpec, Path]:
    """The validated spec and the folder its relative recipe paths start from."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DafnetError(f"experiment spec not found: {path}", hint="give the path of a spec YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DafnetError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue("<spec>", "the spec must be a mapping", "see docs/results.md")], str(path))
    try:
        return ExperimentSpec.model_validate(data), path.parent
    except ValidationError as exc:
        raise RecipeError(issues_from_validation(exc), f"experiment spec {path}") from None


__all__ = ["FULL", "PAIRINGS", "ExperimentSpec", "MethodEntry", "load_spec"]
