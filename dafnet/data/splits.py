"""Subject-level splits (method.md 4): k-fold train/validation/test and annotated subjects.

Both functions are deterministic: the ids are sorted before a seeded shuffle, so the
same ids, seed and settings give the same subjects whatever order they come in.
"""

from __future__ import annotations

import math

import numpy as np

from dafnet.config.schema import SplitConfig
from dafnet.errors import DafnetError


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _shuffled(ids, seed: int) -> list:
    ids = sorted(ids, key=str)
    if len(set(map(str, ids))) != len(ids):
        raise DafnetError(f"subject ids repeat: {ids}")
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order]


def split_counts(n: int, config: SplitConfig) -> tuple[int, int, int]:
    """(train, validation, test) subject counts: rounded fractions, at least one where a fraction is > 0."""
    n_test = _round_half_up(config.test * n)
    n_val = _round_half_up(config.validation * n)
    if config.test > 0:
        n_test = max(n_test, 1)
    if config.validation > 0:
        n_val = max(n_val, 1)
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DafnetError(
            f"{n} subjects cannot be split into train {config.train:g} / validation "
            f"{config.validation:g} / test {config.test:g} with at least one training subject",
            hint="use more subjects or smaller validation/test fractions",
        )
    return n_train, n_val, n_test


def _fold_shifts(n: int, folds: int) -> list[int]:
    """Where each fold's rotation of the shuffled order starts."""
    step = _round_half_up(n / folds)
    return [(f * step) % n for f in range(folds)]


def split_subjects(subject_ids, config: SplitConfig) -> dict[str, list]:
    """Split subjects into ``train``, ``validation`` and ``test`` for ``config.fold``.

    The ids are shuffled with ``config.seed``; fold f rotates that order by
    f * round(N / folds) places, then takes test, validation and the rest as training.
    The folds' test sets are therefore disjoint whenever folds * test <= 1 (3 folds of
    15% for the paper), and every subject is in exactly one part of each fold.
    """
    ids = _shuffled(list(subject_ids), config.seed)
    n = len(ids)
    if n == 0:
        raise DafnetError("no subjects to split")
    shifts = _fold_shifts(n, config.folds)
    if shifts[config.fold] in shifts[:config.fold]:  # this fold would train on an earlier fold's split
        repeat = config.fold
        usable = [k for k in range(1, min(n, 10) + 1) if len(set(_fold_shifts(n, k))) == k]
        raise DafnetError(f"data.split.folds is {config.folds}, too many for {n} subjects: fold {repeat} would "
                          f"repeat fold {shifts.index(shifts[repeat])}'s split",
                          hint=f"fold counts that split {n} subjects distinctly: {', '.join(map(str, usable))}"
                               + (", ..." if n > 10 else ""))
    _, n_val, n_test = split_counts(n, config)
    shift = shifts[config.fold]
    ids = ids[shift:] + ids[:shift]
    return {
        "train": ids[n_test + n_val:],
        "validation": ids[n_test:n_test + n_val],
        "test": ids[:n_test],
    }


def annotated_subjects(train_ids, fraction: float, seed: int) -> list:
    """The round(fraction * N) training subjects that keep their target masks.

    The same ids, fraction and seed give the same subjects; for one seed the sets are
    nested as the fraction grows (a prefix of one seeded shuffle). Rounding is half-up.
    """
    if not 0.0 <= fraction <= 1.0:
        raise DafnetError(f"annotation fraction must be in [0, 1], got {fraction}")
    ids = _shuffled(list(train_ids), seed)
    return ids[:_round_half_up(fraction * len(ids))]


__all__ = ["annotated_subjects", "split_counts", "split_subjects"]
