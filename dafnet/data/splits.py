"""Subject-level splits (method.md 4, docs/data.md "Splits"): k-fold train/validation/test and
annotated subjects.

Both functions are deterministic: the ids are sorted before a seeded shuffle, so the
same ids, seed and settings give the same subjects whatever order they come in.
"""

from __future__ import annotations

import math

import numpy as np

from dafnet.config.schema import DataConfig, SplitConfig
from dafnet.errors import DafnetError


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _shuffled(ids, seed: int) -> list:
    ids = sorted(ids, key=str)
    if len(set(map(str, ids))) != len(ids):
        raise DafnetError(f"subject ids repeat: {ids}")
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order]


def _count(fraction: float, n: int) -> int:
    """round(fraction * n), half up, at least one where the fraction is > 0."""
    return max(_round_half_up(fraction * n), 1) if fraction > 0 else 0


def _take(ordered: list, labelled: set, n: int) -> tuple[list, list]:
    """``n`` subjects of ``ordered`` with labelled ones in proportion (at least one when two or
    more are there to choose from), each kind in its order; returns (taken, rest) in order."""
    with_label = [i for i in ordered if str(i) in labelled]
    without = [i for i in ordered if str(i) not in labelled]
    n = min(n, len(ordered))
    n_labelled = _round_half_up(n * len(with_label) / len(ordered)) if ordered else 0
    if n_labelled == 0 and n > 0 and len(with_label) >= 2:
        n_labelled = 1
    n_labelled = min(max(n_labelled, n - len(without)), len(with_label), n)
    chosen = set(map(str, with_label[:n_labelled] + without[:n - n_labelled]))
    return [i for i in ordered if str(i) in chosen], [i for i in ordered if str(i) not in chosen]


def _fold_tests(ordered: list, labelled: set, folds: int) -> list[list]:
    """The folds' test sets: labelled subjects, then the others, dealt round-robin over the folds."""
    dealt = [i for i in ordered if str(i) in labelled] + [i for i in ordered if str(i) not in labelled]
    groups = [set(map(str, dealt[f::folds])) for f in range(folds)]
    return [[i for i in ordered if str(i) in group] for group in groups]


def _check_trainable(n: int, n_val: int, n_test: int, config: SplitConfig) -> None:
    if n - n_test - n_val < 1:
        raise DafnetError(
            f"{n} subjects cannot be split into {n_test} test and {n_val} validation subjects (fold "
            f"{config.fold} of {config.folds}) with at least one training subject",
            hint="use more subjects, fewer data.split.folds or a smaller data.split.validation")


def split_subjects(subject_ids, config: SplitConfig, labelled=None) -> dict[str, list]:
    """Split subjects into ``train``, ``validation`` and ``test`` for ``config.fold``.

    ``labelled``: ids of the subjects with target-modality labels (None: unknown); they are
    spread evenly over the test and validation sets. The ids are shuffled with ``config.seed``.
    With ``folds`` = k > 1 the labelled subjects, then the others, are dealt round-robin into k
    test sets (sizes and labelled counts differ by at most one; every subject tested once).
    With one fold the test set is round(test * N). Validation, round(validation * N), comes
    from the rest, and training is what is left. ``config.file`` names an nnU-Net
    ``splits_final.json`` whose fold gives test (its ``val``) and the pool for validation and
    training (its ``train``) instead.
    """
    ids = _shuffled(list(subject_ids), config.seed)
    labelled = set(map(str, labelled)) if labelled is not None else set()
    n = len(ids)
    if n == 0:
        raise DafnetError("no subjects to split")
    n_val = _count(config.validation, n)
    if config.file is not None:
        from dafnet.data.split_file import fold_from_file

        pool, test = fold_from_file(config.file, config, ids)
    elif config.folds > 1:
        if config.folds > n:
            raise DafnetError(f"data.split.folds is {config.folds}, more than the {n} subjects: some folds "
                              "would test no subject", hint=f"use at most {n} folds")
        test = _fold_tests(ids, labelled, config.folds)[config.fold]
        tested = set(test)
        pool = [i for i in ids if i not in tested]
    else:
        test, pool = _take(ids, labelled, _count(config.test_fraction, n))
    _check_trainable(n, n_val, len(test), config)
    validation, train = _take(pool, labelled, n_val)
    return {"train": train, "validation": validation, "test": test}


def split_data(subjects, data: DataConfig) -> dict[str, list]:
    """:func:`split_subjects` of loaded subjects with a recipe's ``data`` settings, stratified by
    which subjects have a ``data.target`` label."""
    return split_subjects([s.id for s in subjects], data.split, labelled=with_target_labels(subjects, data.target))


def with_target_labels(subjects, target: str | None) -> set[str] | None:
    """Ids of the subjects whose ``target`` volume has a label (None when the target is unknown)."""
    if target is None:
        return None
    return {str(s.id) for s in subjects
            if target in s.volumes and s.volumes[target].label is not None}


def splits_record(config: SplitConfig, ids: dict[str, list]) -> dict:
    """What a run writes to splits.json: the fold, its settings and the ids of each part."""
    record = {"fold": config.fold, "folds": config.folds, "seed": config.seed}
    if config.file is not None:
        record["file"] = config.file
    return {**record, **{k: [str(i) for i in v] for k, v in ids.items()}}


def annotated_subjects(train_ids, fraction: float, seed: int) -> list:
    """The round(fraction * N) training subjects that keep their target masks.

    The same ids, fraction and seed give the same subjects; for one seed the sets are
    nested as the fraction grows (a prefix of one seeded shuffle). Rounding is half-up.
    """
    if not 0.0 <= fraction <= 1.0:
        raise DafnetError(f"annotation fraction must be in [0, 1], got {fraction}")
    ids = _shuffled(list(train_ids), seed)
    return ids[:_round_half_up(fraction * len(ids))]


__all__ = ["annotated_subjects", "split_data", "split_subjects", "splits_record", "with_target_labels"]
