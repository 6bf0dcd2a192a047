"""Pure preprocessing: orientation, intensity, in-plane resample + crop/pad and their inverse."""

from __future__ import annotations

import numpy as np
import pytest

from dafnet.data.preprocess import (
    InPlaneTransform,
    PreprocessRecord,
    canonical_orientation,
    choose_slice_axis,
    constant_slices,
    crop_or_pad,
    crop_transform,
    field_of_view_plan,
    foreground_centroid,
    label_centroid,
    normalise_intensity,
    plan_in_plane,
    resample_in_plane,
    slice_positions,
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def disk_label(shape=(4, 90, 110)) -> np.ndarray:
    """Two classes: a disk (r 22) and a rectangle, varying a little across slices."""
    s, h, w = shape
    rr, cc = np.mgrid[:h, :w]
    label = np.zeros(shape, dtype=np.int64)
    for k in range(s):
        label[k][(rr - 40 - k) ** 2 + (cc - 45) ** 2 < 22 ** 2] = 1
        label[k][(rr > 15) & (rr < 40) & (cc > 75 + k) & (cc < 100)] = 2
    return label


# ---------------------------------------------------------------- orientation
@pytest.mark.parametrize("spacing, expected", [((1, 1, 3), 2), ((3, 1, 1), 0), ((1, 1, 1), 2),
                                               ((2, 2, 1), 1), ((0.7, 4.0, 0.7), 1)])
def test_auto_slice_axis_is_the_thickest_with_ties_to_the_last(spacing, expected):
    assert choose_slice_axis(spacing) == expected
    assert choose_slice_axis(spacing, 0) == 0


def _storages():
    """One world object stored three ways: RAS axial, LPS axial, and a coronal-first layout."""
    rng = np.random.default_rng(0)
    ras = rng.normal(size=(6, 7, 5)).astype(np.float32)  # i -> R, j -> A, k -> S
    a_ras = np.diag([1.0, 1.5, 3.0, 1.0])
    a_ras[:3, 3] = (-10, 20, 5)
    lps = ras[::-1, ::-1, :]  # i -> L, j -> P
    a_lps = a_ras @ np.array([[-1, 0, 0, 5], [0, -1, 0, 6], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    perm = np.transpose(ras, (2, 0, 1))[::-1]  # stored (S reversed, R, A)
    a_perm = a_ras @ np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, 4], [0, 0, 0, 1]], float)
    return [(ras, a_ras), (lps.copy(), a_lps), (perm.copy(), a_perm)]


def test_orientation_gives_one_radiological_stack_for_any_storage():
    stacks = []
    for data, affine in _storages():
        axis = choose_slice_axis(np.linalg.norm(affine[:3, :3], axis=0))
        orientation = canonical_orientation(affine, data.shape, axis)
        stack = orientation.apply(data)
        out_affine = affine @ orientation.matrix()
        stacks.append((stack, out_affine))
        np.testing.assert_array_equal(orientation.invert(stack), data)
        assert orientation.shape == stack.shape
        # slices go to superior, rows to posterior, columns to the patient's left
        assert out_affine[2, 0] > 0 and out_affine[1, 1] < 0 and out_affine[0, 2] < 0
    for stack, out_affine in stacks[1:]:
        np.testing.assert_array_equal(stack, stacks[0][0])
        np.testing.assert_allclose(out_affine, stacks[0][1])


def test_orientation_is_recorded_and_its_matrix_maps_voxels():
    data, affine = _storages()[1]  # LPS: rows and columns both flip, nothing permutes
    orientation = canonical_orientation(affine, data.shape, 2)
    assert orientation.axes == (2, 1, 0) and orientation.flips == (False, False, False)
    data, affine = _storages()[0]  # RAS: rows to P and columns to L need flips
    orientation = canonical_orientation(affine, data.shape, 2)
    assert orientation.axes == (2, 1, 0) and orientation.flips == (False, True, True)
    stack = orientation.apply(data)
    m = orientation.matrix()
    for voxel in [(0, 0, 0), (3, 2, 4), (4, 6, 5)]:
        src = (m @ np.array([*voxel, 1.0]))[:3].astype(int)
        assert stack[voxel] == data[tuple(src)]
    kept = canonical_orientation(affine, data.shape, 0, reorient=False)
    assert kept.axes == (0, 1, 2) and kept.flips == (False, False, False)


# ---------------------------------------------------------------- intensity
def test_normalise_per_slice_spans_minus_one_to_one_and_clips_outliers():
    rng = np.random.default_rng(1)
    stack = rng.uniform(0, 100, size=(3, 40, 40))
    stack[1] *= 5.0
    stack[2, 0, 0] = 1e6  # one hot pixel
    out = normalise_intensity(stack, (1.0, 99.0), "slice")
    assert out.dtype == np.float32 and out.min() >= -1.0 and out.max() <= 1.0
    for k in range(3):
        assert out[k].min() == -1.0 and out[k].max() == 1.0
    # the outlier did not squash the slice: its median stays near the middle
    assert abs(np.median(out[2])) < 0.1
    unclipped = normalise_intensity(stack, None, "slice")
    assert np.median(unclipped[2]) < -0.99


def test_normalise_per_volume_keeps_relative_brightness_and_constant_is_background():
    stack = np.stack([np.linspace(0, 1, 100).reshape(10, 10), np.linspace(0, 4, 100).reshape(10, 10)])
    out = normalise_intensity(stack, None, "volume")
    assert out.min() == -1.0 and out.max() == 1.0 and out[0].max() == pytest.approx(-0.5)
    flat = np.full((2, 5, 5), 7.0)
    assert constant_slices(flat).all()
    np.testing.assert_array_equal(normalise_intensity(flat), -1.0)


# ---------------------------------------------------------------- in-plane geometry
@pytest.mark.parametrize("in_spacing, target, size", [
    ((0.8, 0.8), (1.0, 1.0), (64, 80)),    # downsample, crop
    ((1.0, 1.2), (0.7, 0.7), (160, 200)),  # upsample, anisotropic input, pad + crop
    ((1.0, 1.0), None, (128, 96)),         # no resampling: pad rows, crop columns
])
def test_resample_crop_then_inverse_reproduces_the_label(in_spacing, target, size):
    label = disk_label()
    centre = label_centroid(label)
    t = plan_in_plane(label.shape[1:], in_spacing, target, size, centre)
    out = t.apply(label, "label")
    assert out.shape == (label.shape[0], *size) and out.dtype == label.dtype
    back = t.invert(out, "label")
    assert back.shape == label.shape
    for c in (1, 2):
        assert dice(back == c, label == c) >= 0.99, c


def test_pure_crop_is_exact_and_its_inverse_fills_background():
    label = disk_label((2, 50, 60))
    out, t = crop_or_pad(label, (30, 30), center=(20, 30), kind="label")
    np.testing.assert_array_equal(out, label[:, 6:36, 16:46])  # even size: centre between pixels
    back = t.invert(out, "label")
    np.testing.assert_array_equal(back[:, 6:36, 16:46], label[:, 6:36, 16:46])
    assert back[:, :6].max() == 0 and back[:, 36:].max() == 0 and label[:, 36:].max() == 1
    padded, t = crop_or_pad(np.ones((1, 4, 4), np.float32), (8, 8))
    assert padded.sum() == pytest.approx(16 - 48)  # 16 ones, 48 pixels of -1 padding


def test_label_centroid_crop_centres_the_structure():
    label = np.zeros((3, 120, 100), dtype=np.int64)
    label[:, 80:100, 10:30] = 1  # far from the centre
    t = plan_in_plane(label.shape[1:], (1.0, 1.0), (2.0, 2.0), (32, 32), label_centroid(label))
    out = t.apply(label, "label")
    r, c = label_centroid(out)
    assert abs(r - 15.5) <= 0.75 and abs(c - 15.5) <= 0.75
    assert out.sum() == pytest.approx(3 * 100, rel=0.15)  # 20x20 px at 1 mm -> 10x10 at 2 mm
    image = np.zeros((2, 60, 60))
    image[:, 40:50, 5:15] = 10.0
    assert foreground_centroid(image) == pytest.approx((44.5, 9.5))


def test_resampling_keeps_the_field_of_view_and_transforms_compose():
    stack = np.random.default_rng(2).normal(size=(2, 100, 70)).astype(np.float32)
    out, t = resample_in_plane(stack, (1.0, 1.0), (3.5, 3.5))
    assert out.shape == (2, 29, 20)
    # first and last output pixel centres sit inside the input field of view, symmetrically
    assert t.offset[0] == pytest.approx(0.5) and t.scale[0] * 28 + t.offset[0] == pytest.approx(98.5)
    crop = crop_transform(t.out_shape, (16, 16))
    both = t.then(crop)
    np.testing.assert_allclose(both.matrix(), t.matrix() @ crop.matrix())
    assert isinstance(both, InPlaneTransform)


def test_record_affine_and_restore_map_back_to_the_source_grid():
    data = np.zeros((50, 40, 12), dtype=np.float32)  # RAS, axial, thick slices along k
    label = np.zeros(data.shape, dtype=np.int64)
    label[10:35, 8:30, 2:10] = 1
    data[label == 1] = 5.0
    affine = np.diag([0.9, 0.9, 4.0, 1.0])
    orientation = canonical_orientation(affine, data.shape, choose_slice_axis([0.9, 0.9, 4.0]))
    stack = orientation.apply(label)
    t = plan_in_plane(stack.shape[1:], (0.9, 0.9), (0.6, 0.6), (96, 96), label_centroid(stack))
    record = PreprocessRecord("x.nii.gz", affine, orientation, (1, 11), t)
    out = t.apply(stack[1:11], "label")
    restored = record.restore(out, "label")
    assert restored.shape == data.shape
    assert dice(restored == 1, label == 1) >= 0.99
    # the record's affine puts every output voxel where it came from in the world
    inv = np.linalg.inv(affine)
    for voxel in [(0, 10, 20), (5, 50, 60), (9, 95, 0)]:
        src = inv @ record.affine @ np.array([*voxel, 1.0])
        expect = (orientation.matrix() @ np.array(
            [voxel[0] + 1, *(np.array(t.scale) * voxel[1:] + t.offset), 1.0]))
        np.testing.assert_allclose(src, expect, atol=1e-9)


def test_probabilities_restore_to_the_source_grid_summing_to_one_like_the_label():
    """One-hot probabilities restore to the label's restore (argmax) and every voxel's
    probabilities sum to 1, also on dropped slices and outside the stack; preprocess_label maps
    a mask on the file grid forward onto the stack."""
    label = np.zeros((50, 40, 12), dtype=np.int64)
    label[10:35, 8:30, 2:10] = 1
    label[20:30, 12:20, 4:8] = 2
    affine = np.diag([0.9, 0.9, 4.0, 1.0])
    orientation = canonical_orientation(affine, label.shape, choose_slice_axis([0.9, 0.9, 4.0]))
    stack = orientation.apply(label)
    t = plan_in_plane(stack.shape[1:], (0.9, 0.9), (0.6, 0.6), (96, 96), label_centroid(stack))
    record = PreprocessRecord("x.nii.gz", affine, orientation, (1, 11), t)
    out = t.apply(stack[1:11], "label")
    one_hot = np.stack([(out == k).astype(np.float32) for k in range(3)], axis=1)
    probabilities = record.restore_probabilities(one_hot)
    assert probabilities.shape == (3, *label.shape) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=0), record.restore(out, "label"))
    assert (probabilities[0][:, :, [0, 11]] == 1).all()  # the dropped slices: background
    np.testing.assert_array_equal(record.preprocess_label(label), out)


# ---------------------------------------------------------------- the whole field of view (predict)
@pytest.mark.parametrize("in_spacing, target, size, centre", [
    ((1.0, 1.0), None, (32, 32), None),                # 90x110 > crop: the whole grid, window centred
    ((0.8, 0.8), (1.5, 1.5), (32, 40), "label"),       # resampled, window off-centre
    ((1.0, 1.0), None, (128, 96), "label"),            # rows padded, the window leaves the grid
    ((1.0, 1.0), (2.0, 2.0), (64, 64), None),          # 45x55 at 2 mm inside the 64x64 crop
])
def test_field_of_view_plan_holds_the_crop_window_and_every_pixel(in_spacing, target, size, centre):
    label = disk_label()
    centre = label_centroid(label) if centre == "label" else None
    window = plan_in_plane(label.shape[1:], in_spacing, target, size, centre)
    whole, (r, c) = field_of_view_plan(label.shape[1:], in_spacing, target, size, centre)
    assert whole.scale == window.scale
    assert whole.out_shape[0] >= size[0] and whole.out_shape[1] >= size[1]
    # the crop window is a window of the whole grid, pixel for pixel
    image = np.random.default_rng(4).normal(size=label.shape).astype(np.float32)
    np.testing.assert_allclose(whole.apply(image)[:, r:r + size[0], c:c + size[1]], window.apply(image),
                               atol=1e-5)
    # every input pixel comes back as resampling alone gives it (the crop loses what lies outside it)
    back = whole.invert(whole.apply(label, "label"), "label")
    alone = label if target is None else resample_in_plane(label, in_spacing, target, "label")[1]
    if target is not None:
        alone = alone.invert(alone.apply(label, "label"), "label")
    np.testing.assert_array_equal(back, alone)
    if whole.out_shape == tuple(size):  # the window holds the whole field of view: the crop itself
        assert whole == window and (r, c) == (0, 0)


def test_field_of_view_plan_without_resampling_is_the_grid_itself():
    whole, window = field_of_view_plan((90, 110), (1.0, 1.0), None, (32, 32))
    assert whole.out_shape == (90, 110) and whole.offset == (0.0, 0.0) and window == (29, 39)
    label = disk_label()
    np.testing.assert_array_equal(whole.apply(label, "label"), label)
    crop = plan_in_plane((90, 110), (1.0, 1.0), None, (32, 32))
    assert (crop.invert(crop.apply(label, "label"), "label") == 2).sum() == 0  # the crop loses class 2
    assert field_of_view_plan((32, 32), (1.0, 1.0), None, (32, 32))[0] == plan_in_plane(
        (32, 32), (1.0, 1.0), None, (32, 32))


def test_slice_positions_follow_the_normal_for_oblique_stacks():
    angle = np.radians(30)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([5.0, 1.2, 1.2])  # slice axis first, 5 mm apart
    affine[:3, 3] = (3, -7, 11)
    positions = slice_positions(affine, (6, 32, 40))
    np.testing.assert_allclose(np.diff(positions), 5.0)
    # another in-plane grid (shifted, other spacing) of the same planes gives the same positions
    other = affine.copy()
    other[:3, 1:3] *= 0.5
    other[:3, 3] += rot @ np.array([0.0, 13.0, -4.0])
    np.testing.assert_allclose(slice_positions(other, (6, 64, 80)), positions)
