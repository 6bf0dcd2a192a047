"""The recipe's ``data.split`` and ``data.augment`` sections (:mod:`dafnet.config.schema` holds the rest)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dafnet.config.strict import Strict


class SplitConfig(Strict):
    """Subject splits (docs/data.md "Splits"): k folds that partition the subjects, or a split file."""

    folds: int = Field(3, ge=1, description="cross-validation folds over subjects: with k > 1 the folds' "
                                            "test sets partition the subjects (each tested once); 1 = a "
                                            "single split by fractions")
    fold: int = Field(0, ge=0, description="which fold this run trains")
    train: float | None = Field(None, gt=0, le=1, description="fraction of subjects for training; "
                                                              "default: the rest")
    validation: float = Field(0.15, ge=0, le=1, description="fraction of all subjects for validation, "
                                                            "carved from the fold's non-test subjects")
    test: float | None = Field(None, ge=0, le=1, description="fraction of subjects for testing: 1/folds "
                                                             "when folds > 1 (a value given must agree), "
                                                             "0.15 when folds = 1")
    seed: int = Field(0, description="seed of the subject shuffle")
    file: str | None = Field(None, description="an nnU-Net splits_final.json (a list of {train, val} folds; "
                                               "val is the test set): path relative to the recipe file "
                                               "or absolute; folds must equal its number of folds")

    @property
    def test_fraction(self) -> float:
        """The share of subjects each fold tests: 1/folds, or ``test`` (default 0.15) for one split."""
        if self.folds > 1:
            return 1.0 / self.folds
        return 0.15 if self.test is None else self.test

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.fold >= self.folds:
            raise ValueError(f"@fold: fold {self.fold} does not exist with folds={self.folds} (0-based)")
        if self.file is not None:
            if not self.file.strip():
                raise ValueError("@file: the split file path is empty; give the path of a splits_final.json "
                                 "(relative to the recipe file) or leave data.split.file out")
            for key in ("train", "test"):
                if getattr(self, key) is not None:
                    raise ValueError(f"@{key}: the split file {self.file} sets each fold's train and test "
                                     f"subjects, so leave {key} out (validation is carved from its train)")
            return self
        if self.folds > 1 and self.test is not None and abs(self.test * self.folds - 1.0) > 0.03:
            raise ValueError(f"@test: with folds={self.folds} every subject is tested in exactly one fold, "
                             f"so each fold tests 1/{self.folds} = {1 / self.folds:.3g} of the subjects, "
                             f"not {self.test:g}; leave test out, or set folds: 1 for a single split "
                             f"by fractions")
        test = self.test_fraction
        if self.validation + test >= 1.0:
            raise ValueError(f"@validation: validation {self.validation:g} + test {test:.3g} leave no "
                             f"subject to train on")
        if self.train is not None and abs(self.train + self.validation + test - 1.0) > (
                1e-6 if self.folds == 1 else 0.01):
            raise ValueError(f"@train: train + validation + test must be 1, got {self.train:g} + "
                             f"{self.validation:g} + {test:.3g}; leave train out to train on the rest")
        return self


class AugmentConfig(Strict):
    rotation_degrees: float = Field(
        20.0, ge=0, le=180, description="random rotation in +-degrees, shared within a pair"
    )
    misalignment_degrees: float = Field(
        0.0, ge=0, le=180,
        description="named deviation (docs/method.md): each non-target modality of a training "
                    "sample gets its own extra random rotation in +-degrees (0: off, the paper)")
    misalignment_shift: float = Field(
        0.0, ge=0, le=0.5,
        description="named deviation (docs/method.md): each non-target modality of a training "
                    "sample gets its own extra random shift, up to +-this fraction of the slice "
                    "size per axis (0: off, the paper)")
    warp: Literal["sample", "batch"] = Field(
        "sample",
        description="where the training samples' motions are applied: sample, each sample as it is loaded "
                    "(on the CPU, in the DataLoader's workers); batch, the same random draws returned with the "
                    "unwarped slices, then one batched resampling per batch on the training device "
                    "(docs/engine.md, 'The fast path'; equal to sample to float tolerance)")


__all__ = ["AugmentConfig", "SplitConfig"]
