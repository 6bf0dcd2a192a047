"""Cross-validation splits: folds that partition the subjects, stratified by target labels, the
test fraction's rule, and a user's nnU-Net splits_final.json."""

from __future__ import annotations

import json
import textwrap

import pytest

from dafnet.config import RecipeError, load_recipe
from dafnet.config.loading import apply_overrides
from dafnet.config.resolve import parse_recipe
from dafnet.config.schema import SplitConfig
from dafnet.data.splits import split_subjects, splits_record
from dafnet.errors import DafnetError


def ids(n: int) -> list[str]:
    return [f"s{i:03d}" for i in range(n)]


def all_folds(subjects, folds: int, labelled=None, **settings) -> list[dict[str, list]]:
    return [split_subjects(subjects, SplitConfig(folds=folds, fold=f, **settings), labelled=labelled)
            for f in range(folds)]


# --------------------------------------------------------------------------- partition
@pytest.mark.parametrize("n, k", [(6, 2), (10, 3), (16, 3), (28, 3), (32, 3), (17, 5), (23, 4), (7, 7)])
def test_folds_partition_the_subjects(n, k):
    subjects = ids(n)
    splits = all_folds(subjects, k, seed=3)
    tests = [set(s["test"]) for s in splits]
    assert sorted(i for t in tests for i in t) == subjects  # every subject tested exactly once
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    n_val = max(round(0.15 * n + 1e-9), 1)
    for s in splits:
        train, validation, test = set(s["train"]), set(s["validation"]), set(s["test"])
        assert len(validation) == n_val and not validation & test
        assert train == set(subjects) - validation - test and train


def test_the_same_ids_and_seed_give_the_same_folds_whatever_their_order():
    labelled = set(ids(30)[::4])
    a = all_folds(ids(30), 3, labelled=labelled, seed=5)
    b = all_folds(list(reversed(ids(30))), 3, labelled=sorted(labelled), seed=5)
    assert a == b
    assert a != all_folds(ids(30), 3, labelled=labelled, seed=6)


# --------------------------------------------------------------------------- stratification
@pytest.mark.parametrize("n, k, n_labelled", [(30, 3, 3), (30, 3, 8), (31, 3, 10), (20, 4, 6), (32, 3, 5)])
def test_labelled_subjects_are_spread_evenly_over_test_and_validation(n, k, n_labelled):
    subjects = ids(n)
    for seed in range(4):
        labelled = set(subjects[seed:seed + n_labelled])
        splits = all_folds(subjects, k, labelled=labelled, seed=seed)
        in_test = [len(set(s["test"]) & labelled) for s in splits]
        in_validation = [len(set(s["validation"]) & labelled) for s in splits]
        assert sum(in_test) == n_labelled and max(in_test) - min(in_test) <= 1
        assert max(in_validation) - min(in_validation) <= 1 and min(in_validation) >= 1


def test_without_stratification_a_few_labelled_subjects_can_all_land_in_one_fold():
    """Why split_subjects takes the labelled ids: the same shuffle, unstratified, is uneven here."""
    subjects, labelled = ids(12), {"s000", "s001", "s002"}
    counts = [[len(set(s["test"]) & labelled) for s in all_folds(subjects, 3, seed=seed)] for seed in range(20)]
    assert any(max(c) - min(c) > 1 for c in counts)
    stratified = [[len(set(s["test"]) & labelled) for s in all_folds(subjects, 3, labelled=labelled, seed=seed)]
                  for seed in range(20)]
    assert all(c == [1, 1, 1] for c in stratified)


def test_one_fold_splits_by_fractions_with_labelled_subjects_in_proportion():
    subjects, labelled = ids(40), set(ids(40)[:10])
    s = split_subjects(subjects, SplitConfig(folds=1, train=0.6, validation=0.2, test=0.2), labelled=labelled)
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == (24, 8, 8)
    assert len(set(s["test"]) & labelled) == 2 and len(set(s["validation"]) & labelled) == 2
    default = split_subjects(subjects, SplitConfig(folds=1))
    assert (len(default["train"]), len(default["validation"]), len(default["test"])) == (28, 6, 6)


# --------------------------------------------------------------------------- the test fraction's rule
@pytest.mark.parametrize("override, key, says", [
    ("data.split.test=0.15", "data.split.test", "each fold tests 1/3 = 0.333 of the subjects, not 0.15"),
    ("data.split={folds: 4, test: 0.3}", "data.split.test", "1/4 = 0.25"),
    ("data.split={folds: 1, train: 0.7, test: 0.2}", "data.split.train", "train + validation + test must be 1"),
    ("data.split={validation: 0.7}", "data.split.validation", "leave no subject to train on"),
    ("data.split={file: s.json, test: 0.2}", "data.split.test", "the split file s.json sets each fold's"),
    ("data.split.file=''", "data.split.file", "the split file path is empty"),
])
def test_split_fractions_that_disagree_are_errors_at_their_key(override, key, says):
    base = {"method": "dafnet", "data": {"source": "phantom", "modalities": ["cine", "lge"]}}
    with pytest.raises(RecipeError) as err:
        parse_recipe(apply_overrides(base, [override]))
    assert says in {i.path: i.message for i in err.value.issues}[key]


def test_a_test_fraction_agreeing_with_the_folds_is_accepted():
    assert SplitConfig(folds=3, test=0.33, validation=0.17, train=0.5).test_fraction == pytest.approx(1 / 3)
    assert SplitConfig(folds=1).test_fraction == 0.15


# --------------------------------------------------------------------------- split file
def write_splits(tmp_path, folds, name="splits_final.json"):
    path = tmp_path / name
    path.write_text(json.dumps(folds) if not isinstance(folds, str) else folds)
    return path


NNUNET_FOLDS = [{"train": ids(9)[3:], "val": ids(9)[:3]},
                {"train": ids(9)[:3] + ids(9)[6:], "val": ids(9)[3:6]},
                {"train": ids(9)[:6], "val": ids(9)[6:]}]


def test_a_split_file_gives_test_and_the_pool_for_validation_and_training(tmp_path):
    path = write_splits(tmp_path, NNUNET_FOLDS)
    for f, fold in enumerate(NNUNET_FOLDS):
        config = SplitConfig(file=str(path), fold=f, validation=0.2)
        s = split_subjects(ids(9), config)
        assert set(s["test"]) == set(fold["val"])
        assert len(s["validation"]) == 2 and set(s["validation"]) <= set(fold["train"])
        assert set(s["train"]) == set(fold["train"]) - set(s["validation"])
        assert splits_record(config, s)["file"] == str(path)


@pytest.mark.parametrize("content, settings, says", [
    ({"train": [], "val": []}, {}, "must hold a non-empty list of folds"),
    ([], {}, "must hold a non-empty list of folds"),
    ("[{", {}, "is not JSON"),
    ([{"train": ids(9)}], {"folds": 1}, "fold 0 must be a mapping with exactly the keys train and val"),
    ([{"train": ids(9)[1:], "val": ids(9)[:2]}], {"folds": 1}, "fold 0 has subjects in both train and val: ['s001']"),
    ([{"train": ids(9)[3:] + ["s003"], "val": ids(9)[:3]}], {"folds": 1}, "fold 0's train lists ['s003'] twice"),
    ([{"train": ids(9)[3:], "val": ["s000", 1.5]}], {"folds": 1}, "fold 0's val must be a list of subject ids"),
    (NNUNET_FOLDS, {"folds": 5, "fold": 4}, "data.split.fold is 4, but split file"),
    (NNUNET_FOLDS, {"folds": 5, "fold": 0}, "data.split.folds is 5, but split file"),
    ([{"train": ids(9)[3:] + ["x9"], "val": ids(9)[:3]}], {"folds": 1}, "names subjects the data do not have: ['x9']"),
    ([{"train": ids(9)[4:], "val": ids(9)[:3]}], {"folds": 1},
     "places neither in train nor in val the subjects ['s003']"),
])
def test_a_bad_split_file_is_an_error_naming_the_file(tmp_path, content, settings, says):
    path = write_splits(tmp_path, content)
    with pytest.raises(DafnetError) as err:
        split_subjects(ids(9), SplitConfig(file=str(path), **settings))
    assert says in err.value.message and str(path) in err.value.message


def test_a_missing_split_file_names_the_key(tmp_path):
    with pytest.raises(DafnetError, match=r"nope\.json \(data\.split\.file\) does not exist"):
        split_subjects(ids(9), SplitConfig(file=str(tmp_path / "nope.json")))


def test_a_folder_as_split_file_is_an_error_saying_so(tmp_path):
    with pytest.raises(DafnetError, match=r"\(data\.split\.file\) is a folder, not a file"):
        split_subjects(ids(9), SplitConfig(file=str(tmp_path)))


def test_the_split_file_path_is_relative_to_the_recipe_that_names_it(tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    write_splits(tmp_path, NNUNET_FOLDS)
    recipe = folder / "r.yaml"
    recipe.write_text(textwrap.dedent("""\
        method: dafnet
        data:
          source: {name: phantom, params: {subjects: 9}}
          modalities: [cine, lge]
          split: {file: ../splits_final.json}
        """))
    assert load_recipe(recipe).data.split.file == str((tmp_path / "splits_final.json").resolve())
    child = tmp_path / "child.yaml"
    child.write_text("base: recipes/r.yaml\nname: child\n")
    assert load_recipe(child).data.split.file == str((tmp_path / "splits_final.json").resolve())
