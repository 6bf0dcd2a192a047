"""Slice pairing by position, subject splits, annotated subjects and the training streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dafnet.config.schema import SplitConfig
from dafnet.data.slice_pairing import candidate_window, draw_candidates, nearest_slices
from dafnet.data.slices import PairedSliceDataset, SampleConfig, rotate_sample, training_streams
from dafnet.data.splits import annotated_subjects, split_subjects
from dafnet.errors import DafnetError
from dafnet.interfaces import Subject, Volume


# --------------------------------------------------------------------------- pairing
def test_nearest_slice_by_position_not_by_index():
    target = [0.0, 10.0, 20.0, 30.0]
    other = [28.0, 19.0, 11.0, 1.0, -9.0]  # reversed order, shifted
    assert nearest_slices(target, other).tolist() == [3, 2, 1, 0]


def test_candidates_are_the_expert_slice_then_random_others_within_the_window():
    """As the original's expand_pairs: the nearest slice first, then k - 1 other slices of the
    +-radius window drawn at random without replacement; seeded, so reproducible."""
    other = np.arange(10) * 5.0  # 0, 5, ..., 45
    assert draw_candidates(21.0, other, 1, 2, "expert", None).tolist() == [4]  # 20 mm is nearest
    draws = [draw_candidates(21.0, other, 3, 2, "expert", np.random.default_rng(seed)) for seed in range(200)]
    for cands in draws:
        assert cands[0] == 4 and len(set(cands.tolist())) == 3
        assert set(cands[1:].tolist()) <= {2, 3, 5, 6}
    assert {int(c) for cands in draws for c in cands[1:]} == {2, 3, 5, 6}  # random, not the nearest two
    assert len({tuple(c.tolist()) for c in draws}) > 1
    rerun = [draw_candidates(21.0, other, 3, 2, "expert", np.random.default_rng(seed)) for seed in range(200)]
    assert all(np.array_equal(a, b) for a, b in zip(draws, rerun))
    full = draw_candidates(21.0, other, 5, 2, "expert", np.random.default_rng(0))
    assert full[0] == 4 and sorted(full.tolist()) == [2, 3, 4, 5, 6]
    # At the stack's edge the window is clipped and the nearest slice fills the rest.
    edge = draw_candidates(0.0, [0.0, 5.0, 10.0], 4, 2, "expert", np.random.default_rng(0))
    assert edge[0] == 0 and sorted(edge[1:3].tolist()) == [1, 2] and edge[3] == 0
    assert candidate_window(0.0, [0.0, 5.0, 10.0], 4, 2)[1].tolist() == [0, 1, 2]
    with pytest.raises(DafnetError, match="do not fit"):
        draw_candidates(0.0, other, 6, 2, "expert", np.random.default_rng(0))
    with pytest.raises(DafnetError, match="random generator"):
        draw_candidates(21.0, other, 3, 2, "expert", None)


def test_shuffled_pairing_draws_within_the_window():
    other = np.arange(20) * 2.0
    rng = np.random.default_rng(0)
    draws = {int(draw_candidates(20.0, other, 1, 2, "shuffled", rng)[0]) for _ in range(200)}
    assert draws == {8, 9, 10, 11, 12}
    perms = [draw_candidates(20.0, other, 3, 2, "shuffled", rng) for _ in range(50)]
    assert all(10 in p and len(set(p.tolist())) == 3 and set(p.tolist()) <= draws for p in perms)
    assert any(p[0] != 10 for p in perms)  # the expert slice is not always first


# --------------------------------------------------------------------------- splits
IDS = [f"p{i:02d}" for i in range(28)]


def test_splits_are_deterministic_disjoint_and_cover_all():
    config = SplitConfig(folds=3, fold=1, seed=7)
    a = split_subjects(IDS, config)
    b = split_subjects(list(reversed(IDS)), config)
    assert a == b
    parts = [set(a[k]) for k in ("train", "validation", "test")]
    assert sum(len(p) for p in parts) == len(IDS)
    assert set().union(*parts) == set(IDS)
    assert all(not (p & q) for i, p in enumerate(parts) for q in parts[i + 1:])
    # 3 folds partition 28 subjects (10/9/9 tested); validation round(0.15 * 28) = 4, training the rest
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (15, 4, 9)


def test_folds_have_disjoint_test_sets_and_seeds_differ():
    tests = [set(split_subjects(IDS, SplitConfig(folds=3, fold=f))["test"]) for f in range(3)]
    assert all(not (tests[i] & tests[j]) for i in range(3) for j in range(i + 1, 3))
    assert split_subjects(IDS, SplitConfig(seed=0)) != split_subjects(IDS, SplitConfig(seed=1))


def test_split_needs_a_training_subject():
    with pytest.raises(DafnetError):
        split_subjects(["a", "b"], SplitConfig(folds=1, train=0.4, validation=0.3, test=0.3))


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.25, 5), (0.5, 10), (1.0, 20)])
def test_annotated_subjects_round_and_stay_fixed(fraction, expected):
    train = IDS[:20]
    chosen = annotated_subjects(train, fraction, seed=3)
    assert len(chosen) == expected and set(chosen) <= set(train)
    assert annotated_subjects(list(reversed(train)), fraction, seed=3) == chosen


def test_annotated_subjects_are_nested_as_the_fraction_grows():
    train = IDS[:20]
    sets = [set(annotated_subjects(train, f, seed=5)) for f in (0.1, 0.25, 0.5, 0.75)]
    assert all(a <= b for a, b in zip(sets, sets[1:]))
    assert set(annotated_subjects(train, 0.5, seed=5)) != set(annotated_subjects(train, 0.5, seed=6))


# --------------------------------------------------------------------------- streams
def make_subject(i: int, slices: int = 3, size: int = 16, target_label: bool = True) -> Subject:
    rng = np.random.default_rng(i)
    vols = {}
    for m, offset in (("cine", 0.0), ("lge", 1.0)):
        n = slices + (1 if m == "cine" else 0)
        image = rng.uniform(-1, 1, (n, size, size)).astype(np.float32)
        label = (image > 0.5).astype(np.int64)
        if m == "lge" and not target_label:
            label = None
        vols[m] = Volume(image, label, np.arange(n) * 8.0 + offset)
    return Subject(f"s{i}", vols)


SUBJECTS = [make_subject(i) for i in range(4)]
CONFIG = SampleConfig(("cine", "lge"), "lge")


@pytest.mark.parametrize("fraction, n_labelled", [(0.0, 0), (0.5, 2), (1.0, 4)])
def test_streams_split_subjects_by_annotation(fraction, n_labelled):
    annotated = annotated_subjects([s.id for s in SUBJECTS], fraction, seed=0)
    streams = training_streams(SUBJECTS, CONFIG, annotated)
    assert len(streams["labelled"]) == 3 * n_labelled
    assert len(streams["unlabelled"]) == 3 * (4 - n_labelled)
    assert set(streams["labelled"].subject_ids) == set(annotated)
    for name, ds in streams.items():
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["images"].shape == (2, 1, 1, 16, 16)
            # The source (cine) keeps its masks in both streams; the target's only when labelled.
            assert bool(sample["labelled"][0, 0])
            assert bool(sample["labelled"][1, 0]) == (name == "labelled")
            if name == "unlabelled":
                assert int(sample["masks"][1].abs().sum()) == 0


def test_sample_pairs_the_nearest_source_slice():
    ds = PairedSliceDataset(SUBJECTS[:1], CONFIG, training=False)
    subject = SUBJECTS[0]
    for i in range(len(ds)):
        sample = ds[i]
        s = int(sample["slice"])
        assert torch.equal(sample["images"][1, 0, 0], torch.from_numpy(subject.volumes["lge"].image[s]))
        # lge slice s is at 8 s + 1 mm, so cine slice s (8 s mm) is the nearest.
        assert torch.equal(sample["images"][0, 0, 0], torch.from_numpy(subject.volumes["cine"].image[s]))
        assert torch.equal(sample["masks"][0, 0], torch.from_numpy(subject.volumes["cine"].label[s]))


def test_candidates_stack_and_target_row_repeats():
    config = SampleConfig(("cine", "lge"), "lge", num_candidates=3)
    sample = PairedSliceDataset(SUBJECTS[:1], config, training=False)[1]
    assert sample["images"].shape == (2, 3, 1, 16, 16)
    assert torch.equal(sample["images"][1, 0], sample["images"][1, 2])
    assert not torch.equal(sample["images"][0, 0], sample["images"][0, 1])



def test_training_candidates_are_drawn_once_seeded_with_the_expert_first():
    subjects = [make_subject(0, slices=6)]  # cine slice i is the nearest to lge slice i
    config = SampleConfig(("cine", "lge"), "lge", num_candidates=3, candidate_radius=2, seed=5)
    data = PairedSliceDataset(subjects, config, training=True)
    again = PairedSliceDataset(subjects, config, training=True)
    for item in range(len(data)):
        first, second = data[item]["images"], data[item]["images"]
        assert torch.equal(first, second) and torch.equal(first, again[item]["images"])  # fixed, seeded
        chosen = data._fixed[data.index[item]][0]
        assert chosen[0] == item  # the expert (same-position) slice first
        assert abs(chosen - item).max() <= 2 and len(set(chosen.tolist())) == 3


def test_subjects_without_a_target_label_are_unlabelled_and_missing_modalities_skipped():
    subjects = [make_subject(0, target_label=False), make_subject(1)]
    del subjects[1].volumes["cine"]
    with pytest.warns(UserWarning, match="left out"):
        streams = training_streams(subjects, CONFIG, ["s0", "s1"])
    assert len(streams["labelled"]) == 0 and len(streams["unlabelled"]) == 3
    evaluation = PairedSliceDataset(subjects, CONFIG, training=False)
    assert len(evaluation) == 6
    assert not bool(evaluation[5]["present"][0])


def test_rotation_is_shared_by_every_image_and_mask_of_a_sample():
    torch.manual_seed(0)
    size = 24
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((xx > 13) & (xx < 20) & (yy > 4) & (yy < 11)).long()  # an off-centre bar inside the image
    image = mask.float() * 2 - 1
    vols = {m: Volume(image[None].numpy().repeat(2, 0), mask[None].numpy().repeat(2, 0), np.array([0.0, 8.0]))
            for m in ("cine", "lge")}
    config = SampleConfig(("cine", "lge"), "lge", num_candidates=2, rotation_degrees=45)
    ds = PairedSliceDataset([Subject("r", vols)], config, training=True)
    rotated_any = False
    for _ in range(5):
        sample = ds[0]
        images, masks = sample["images"][:, :, 0], sample["masks"]
        rotated_any |= not torch.equal(masks[0, 0], mask)
        for m in range(2):
            for c in range(2):
                assert torch.equal(images[m, c], images[0, 0])
                assert torch.equal(masks[m, c], masks[0, 0])
        # Image and mask rotate together: same centre of mass, large overlap.
        weight, fg = (images[0, 0] + 1) / 2, masks[0, 0].float()
        centre = lambda w: torch.stack([(w * yy).sum(), (w * xx).sum()]) / w.sum()  # noqa: E731
        assert torch.allclose(centre(weight), centre(fg), atol=0.5)
        bright = (images[0, 0] > 0).float()
        assert 2 * (bright * fg).sum() / (bright.sum() + fg.sum()) > 0.85
        assert set(masks.unique().tolist()) <= {0, 1}
    assert rotated_any


def test_misalignment_moves_each_non_target_modality_on_its_own():
    # data.augment.misalignment_*: the target row keeps the shared rotation only (here none), every
    # other modality gets its own rigid motion, shared by its k candidates; images and masks together.
    torch.manual_seed(1)
    size = 24
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((xx > 8) & (xx < 15) & (yy > 8) & (yy < 15)).long()
    image = mask.float() * 2 - 1
    vols = {m: Volume(image[None].numpy().repeat(2, 0), mask[None].numpy().repeat(2, 0), np.array([0.0, 8.0]))
            for m in ("cine", "t2", "lge")}
    config = SampleConfig(("cine", "t2", "lge"), "lge", num_candidates=2, rotation_degrees=0.0,
                          misalignment_degrees=10.0, misalignment_shift=0.15)
    ds = PairedSliceDataset([Subject("m", vols)], config, training=True)
    moved = 0
    for _ in range(4):
        sample = ds[0]
        images, masks = sample["images"][:, :, 0], sample["masks"]
        assert torch.equal(masks[2, 0], mask) and torch.equal(masks[2, 1], mask)  # the target stays
        for m in range(2):
            assert torch.equal(masks[m, 0], masks[m, 1]) and torch.equal(images[m, 0], images[m, 1])
            fg, bright = masks[m, 0].float(), (images[m, 0] > 0).float()
            assert 2 * (bright * fg).sum() / (bright.sum() + fg.sum()) > 0.8  # image and mask move together
        moved += int(not torch.equal(masks[0, 0], masks[1, 0]))
    assert moved >= 3  # cine and t2 move independently
    evaluation = PairedSliceDataset([Subject("m", vols)], config, training=False)
    assert torch.equal(evaluation[0]["masks"][0, 0], mask)  # never at evaluation


def test_rotate_sample_by_zero_is_the_identity():
    images = torch.rand(3, 1, 8, 12)
    masks = torch.randint(0, 3, (3, 8, 12))
    rotated, rotated_masks = rotate_sample(images, masks, 0.0)
    assert torch.allclose(rotated, images, atol=1e-6)
    assert torch.equal(rotated_masks, masks)


def test_soft_masks_move_with_the_images_and_have_soft_edges():
    # SampleConfig.soft_mask_classes: the mask critic's reals, one-hot foreground channels resampled
    # bilinearly with the same motion as the images and the (nearest) label maps.
    size = 24
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((xx > 6) & (xx < 17) & (yy > 6) & (yy < 17)).long() + ((xx > 9) & (xx < 14) & (yy > 9) & (yy < 14)).long()
    image = mask.float() - 1
    vols = {m: Volume(image[None].numpy().repeat(2, 0), mask[None].numpy().repeat(2, 0), np.array([0.0, 8.0]))
            for m in ("cine", "t2")}
    onehot = torch.stack([(mask == 1).float(), (mask == 2).float()])
    still = SampleConfig(("cine", "t2"), "t2", soft_mask_classes=3)
    sample = PairedSliceDataset([Subject("m", vols)], still, training=True)[0]
    assert sample["soft_masks"].shape == (2, 1, 2, size, size) and torch.equal(sample["soft_masks"][0, 0], onehot)
    torch.manual_seed(0)
    moving = SampleConfig(("cine", "t2"), "t2", rotation_degrees=30.0, misalignment_degrees=10.0, soft_mask_classes=3)
    ds = PairedSliceDataset([Subject("m", vols)], moving, training=True)
    soft_edges = False
    for _ in range(4):
        sample = ds[0]
        soft, masks = sample["soft_masks"][:, 0], sample["masks"][:, 0]
        assert 0 <= soft.min() and soft.sum(1).max() <= 1 + 1e-5
        soft_edges |= bool(((soft > 0.05) & (soft < 0.95)).any())
        for m in range(2):  # the same motion as the label maps (nearest): they agree away from the edges
            hard = torch.stack([(masks[m] == 1).float(), (masks[m] == 2).float()])
            assert (soft[m].round() != hard).float().mean() < 0.02
    assert soft_edges
    assert "soft_masks" not in PairedSliceDataset([Subject("m", vols)], moving, training=False)[0]
    assert "soft_masks" not in PairedSliceDataset([Subject("m", vols)], SampleConfig(("cine", "t2"), "t2",
                                                  rotation_degrees=30.0), training=True)[0]


@pytest.mark.parametrize("n, folds", [(6, 50), (6, 7)])
def test_more_folds_than_subjects_is_an_error(n, folds):
    with pytest.raises(DafnetError, match=f"data.split.folds is {folds}, more than the {n} subjects"):
        split_subjects(list(range(n)), SplitConfig(folds=folds, fold=0))
    assert len(split_subjects(list(range(n)), SplitConfig(folds=n, fold=n - 1))["test"]) == 1  # leave one out
