"""The `nnunet` data source: layout, labels, geometry, bad input, caching, real MR (open_ms)."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dafnet import registry
from dafnet.data import nifti
from dafnet.data.nnunet import NnUNetDataSource
from dafnet.errors import DafnetError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OPEN_MS = SHARED_DATA / "open_ms"


# ---------------------------------------------------------------- synthetic datasets
def head(shape=(40, 36, 8), spacing=(1.0, 1.0, 4.0), shift=(0.0, 0.0, 0.0), seed=0):
    """(image, label, affine): an LPS axial stack of a bright ellipsoid with a 'lesion' inside."""
    rng = np.random.default_rng(seed)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = np.array([20.0, 18.0, -16.0]) + shift
    world = nib.affines.apply_affine(affine, np.stack(np.indices(shape), -1))
    inside = ((world[..., 0] / 14) ** 2 + (world[..., 1] / 12) ** 2 + (world[..., 2] / 15) ** 2) < 1
    lesion = ((world[..., 0] - 4) ** 2 + (world[..., 1] + 3) ** 2 + world[..., 2] ** 2) < 5 ** 2
    image = np.where(inside, 100.0, 0.0) + np.where(lesion, 60.0, 0.0) + rng.normal(0, 2, shape)
    return image.astype(np.float32), (lesion & inside).astype(np.uint8), affine


def save(path: Path, data, affine) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def make_dataset(root: Path, cases=("a", "b"), channels=("FLAIR", "T1"), labels="channel") -> Path:
    """Cases with every channel on its own grid (channel i: spacing 1 + 0.2 i, shifted)."""
    for n, case in enumerate(cases):
        shared = None
        for i, _ in enumerate(channels):
            step = 0.0 if labels == "single" else 0.2 * i  # a single label needs one grid
            image, label, affine = head(spacing=(1.0 + step, 1.0 + step, 4.0), seed=n * 10 + i)
            save(root / "imagesTr" / f"{case}_{i:04d}.nii.gz", image, affine)
            if labels == "channel":
                save(root / "labelsTr" / f"{case}_{i:04d}.nii.gz", label, affine)
            shared = (label, affine)
        if labels == "single":
            save(root / "labelsTr" / f"{case}.nii.gz", *shared)
    info = {"channel_names": {str(i): c for i, c in enumerate(channels)},
            "labels": {"background": 0, "lesion": 1}, "numTraining": len(cases),
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def source(root, **params) -> NnUNetDataSource:
    """The source at 32 x 32 px keeping each file's spacing (the default, auto, plans one:
    tests/test_planned_spacing.py)."""
    params.setdefault("image_size", [32, 32])
    params.setdefault("spacing_mm", None)
    return NnUNetDataSource(NnUNetDataSource.Params(root=str(root), **params))


def load_quiet(src):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return src.load()


# ---------------------------------------------------------------- declared facts, registry
def test_construction_reads_dataset_json_only(tmp_path, monkeypatch):
    make_dataset(tmp_path)
    monkeypatch.setattr(nib, "load", lambda *a, **k: pytest.fail("decoded an image"))
    src = source(tmp_path)
    assert src.modalities == ("flair", "t1") and src.class_names == ("lesion",)
    assert src.declared_facts() == {"image_size": (32, 32), "modalities": ("flair", "t1"),
                                    "num_classes": 1, "class_names": ("lesion",)}
    registry.register("data_source", "nnunet", NnUNetDataSource)
    assert registry.registry("data_source").get("nnunet") is NnUNetDataSource


def test_missing_root_names_the_path_and_the_recipe_key(tmp_path):
    with pytest.raises(DafnetError) as err:
        source(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in err.value.message
    assert "data.source.params.root" in err.value.message and err.value.hint


def test_channel_selection_by_list_and_by_mapping(tmp_path):
    make_dataset(tmp_path, channels=("FLAIR", "T1", "T2"))
    assert source(tmp_path, channels=["T2", "flair"]).modalities == ("t2", "flair")
    renamed = source(tmp_path, channels={"target": "T1", "other": 0})
    assert renamed.modalities == ("target", "other")
    subject = load_quiet(renamed)[0]
    assert set(subject.volumes) == {"target", "other"}
    with pytest.raises(DafnetError, match="'PD'"):
        source(tmp_path, channels=["PD"])


# ---------------------------------------------------------------- loading
def test_load_shapes_ranges_labels_and_geometry(tmp_path):
    make_dataset(tmp_path)
    src = source(tmp_path, spacing_mm=1.5, crop_center="label")
    subjects = load_quiet(src)
    assert [s.id for s in subjects] == ["a", "b"]
    for subject in subjects:
        for name, volume in subject.volumes.items():
            assert volume.image.shape[1:] == (32, 32) and volume.image.dtype == np.float32
            assert volume.image.min() >= -1.0 and volume.image.max() <= 1.0
            assert volume.label.dtype == np.int64 and volume.label.max() == 1
            np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, 1:3], axis=0), 1.5)
            np.testing.assert_allclose(np.abs(np.diff(volume.slice_positions)), 4.0)
            # the lesion sits where it is in the world (at x=4, y=-3 mm) in every channel
            r, c = np.argwhere(volume.label).mean(axis=0)[1:]
            world = volume.affine @ np.array([0.0, r, c, 1.0])
            assert abs(world[0] - 4.0) < 1.0 and abs(world[1] + 3.0) < 1.0, name
    flair, t1 = subjects[0].volumes["flair"], subjects[0].volumes["t1"]
    assert not np.allclose(flair.affine, t1.affine)  # each channel keeps its own geometry
    np.testing.assert_allclose(flair.slice_positions, t1.slice_positions, atol=1e-6)


def test_single_label_is_shared_by_channels_on_its_grid(tmp_path):
    make_dataset(tmp_path, labels="single")
    subject = load_quiet(source(tmp_path))[0]
    np.testing.assert_array_equal(subject.volumes["flair"].label, subject.volumes["t1"].label)
    assert subject.volumes["flair"].label.sum() > 0


def test_single_label_on_another_grid_is_an_error_naming_both_files(tmp_path):
    make_dataset(tmp_path, labels="none")
    _, label, affine = head(shape=(30, 30, 8))
    save(tmp_path / "labelsTr" / "a.nii.gz", label, affine)
    with pytest.raises(DafnetError) as err:
        load_quiet(source(tmp_path))
    assert "a.nii.gz" in err.value.message and "a_0000.nii.gz" in err.value.message
    assert "labelsTr/a_XXXX" in err.value.hint


def test_missing_channel_and_missing_label_are_absent_not_errors(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "imagesTr" / "b_0001.nii.gz").unlink()
    (tmp_path / "labelsTr" / "a_0000.nii.gz").unlink()
    a, b = load_quiet(source(tmp_path))
    assert set(b.volumes) == {"flair"}
    assert a.volumes["flair"].label is None and a.volumes["t1"].label is not None


def test_label_map_maps_file_values_and_rejects_unmapped_ones(tmp_path):
    make_dataset(tmp_path, cases=("a",))
    path = tmp_path / "labelsTr" / "a_0000.nii.gz"
    img = nib.load(path)
    save(path, np.asarray(img.dataobj) * 7, img.affine)  # lesion stored as 7
    with pytest.raises(DafnetError, match=r"label values \[7\].*0\.\.1"):
        load_quiet(source(tmp_path))
    mapped = load_quiet(source(tmp_path, label_map={"flair": {0: 0, 7: 1}}))[0]
    assert set(np.unique(mapped.volumes["flair"].label)) == {0, 1}
    with pytest.raises(DafnetError, match="not in label_map"):
        load_quiet(source(tmp_path, label_map={"*": {0: 0, 7: 1}}))  # t1's lesion value 1 unmapped
    with pytest.raises(DafnetError, match="outside the classes"):
        source(tmp_path, label_map={"flair": {7: 3}})


def test_label_map_keeps_background_unless_it_maps_zero_itself(tmp_path):
    make_dataset(tmp_path, cases=("a",))
    path = tmp_path / "labelsTr" / "a_0000.nii.gz"
    img = nib.load(path)
    stored = np.asarray(img.dataobj)
    save(path, stored * 7, img.affine)  # lesion stored as 7, background 0
    implied = load_quiet(source(tmp_path, label_map={"flair": {7: 1}}))[0].volumes["flair"].label
    explicit = load_quiet(source(tmp_path, label_map={"flair": {0: 0, 7: 1}}))[0].volumes["flair"].label
    np.testing.assert_array_equal(implied, explicit)
    assert set(np.unique(implied)) == {0, 1}
    swapped = load_quiet(source(tmp_path, label_map={"flair": {0: 1, 7: 0}}))[0].volumes["flair"].label
    np.testing.assert_array_equal(swapped, 1 - implied)  # the user's own 0 -> 1 wins


def test_slice_axis_auto_takes_the_thick_axis_and_can_be_forced(tmp_path):
    make_dataset(tmp_path, cases=("a",), channels=("FLAIR",))
    auto = load_quiet(source(tmp_path))[0].volumes["flair"]
    assert auto.num_slices <= 8
    forced = load_quiet(source(tmp_path, slice_axis=0, image_size=[16, 40]))[0].volumes["flair"]
    assert forced.num_slices > 8 and forced.image.shape[1:] == (16, 40)


def test_4d_files_need_a_volume_index(tmp_path):
    make_dataset(tmp_path, cases=("a",), channels=("CINE",), labels="none")
    path = tmp_path / "imagesTr" / "a_0000.nii.gz"
    img = nib.load(path)
    frames = np.stack([np.asarray(img.dataobj), np.asarray(img.dataobj)[::-1] * 2], axis=-1)
    save(path, frames, img.affine)
    with pytest.raises(DafnetError, match="volume_index"):
        load_quiet(source(tmp_path))
    first = load_quiet(source(tmp_path, volume_index=0))[0].volumes["cine"].image
    second = load_quiet(source(tmp_path, volume_index=1))[0].volumes["cine"].image
    assert not np.allclose(first, second)
    with pytest.raises(DafnetError, match="volume_index is 2"):
        load_quiet(source(tmp_path, volume_index=2))


def test_second_load_decodes_nothing_and_records_restore_labels(tmp_path, monkeypatch):
    make_dataset(tmp_path, cases=("a",))
    reads = []
    real = nifti.read_volume
    monkeypatch.setattr(nifti, "read_volume", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    src = source(tmp_path, spacing_mm=0.8, image_size=[64, 64])
    first = load_quiet(src)
    assert len(reads) == 4  # two images, two labels
    second = src.load()
    assert len(reads) == 4 and second[0] is first[0]
    volume = first[0].volumes["t1"]
    restored = src.record("a", "t1").restore(volume.label, "label")
    original = np.asarray(nib.load(tmp_path / "labelsTr" / "a_0001.nii.gz").dataobj)
    assert restored.shape == original.shape
    assert 2 * (restored * original).sum() / (restored.sum() + original.sum()) > 0.9


def test_constant_end_slices_are_dropped_with_a_warning(tmp_path):
    make_dataset(tmp_path, cases=("a",), channels=("FLAIR",), labels="none")
    path = tmp_path / "imagesTr" / "a_0000.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[:, :, 0] = 0.0
    data[:, :, 4] = 3.0
    save(path, data, img.affine)
    with pytest.warns(UserWarning, match="dropped 1 constant slice.*1 constant slice"):
        volume = source(tmp_path).load()[0].volumes["flair"]
    assert volume.num_slices == 7
    assert np.all(volume.image[3] == -1.0)  # the inner constant slice is background


# ---------------------------------------------------------------- bad input
def _only_case(tmp_path, **kwargs):
    make_dataset(tmp_path, cases=("a",), channels=("FLAIR",), **kwargs)
    return tmp_path / "imagesTr" / "a_0000.nii.gz"


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    path = _only_case(tmp_path)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))  # valid gzip, truncated voxel data
    with pytest.raises(DafnetError, match="a_0000.nii.gz.*corrupt or truncated"):
        load_quiet(source(tmp_path))
    path.write_bytes(path.read_bytes()[:200])  # truncated gzip stream
    with pytest.raises(DafnetError, match="a_0000.nii.gz"):
        load_quiet(source(tmp_path))
    path.write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(DafnetError, match="a_0000.nii.gz"):
        load_quiet(source(tmp_path))


def test_image_and_label_of_different_shapes(tmp_path):
    _only_case(tmp_path)
    _, label, affine = head(shape=(40, 36, 6))
    save(tmp_path / "labelsTr" / "a_0000.nii.gz", label, affine)
    with pytest.raises(DafnetError, match=r"labelsTr/a_0000.nii.gz.*\(40, 36, 6\).*imagesTr/a_0000"):
        load_quiet(source(tmp_path))


def test_non_integer_labels(tmp_path):
    _only_case(tmp_path)
    path = tmp_path / "labelsTr" / "a_0000.nii.gz"
    img = nib.load(path)
    save(path, np.asarray(img.dataobj).astype(np.float32) * 0.5, img.affine)
    with pytest.raises(DafnetError, match="a_0000.nii.gz: label values must be integers"):
        load_quiet(source(tmp_path))


def test_nan_images(tmp_path):
    path = _only_case(tmp_path)
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[3, 3, 3] = np.nan
    save(path, data, img.affine)
    with pytest.raises(DafnetError, match="a_0000.nii.gz: 1 NaN"):
        load_quiet(source(tmp_path))


def test_complex_images_are_refused(tmp_path):
    path = _only_case(tmp_path)
    img = nib.load(path)
    save(path, np.asarray(img.dataobj).astype(np.complex64), img.affine)
    with pytest.raises(DafnetError, match="a_0000.nii.gz: its voxels are complex"):
        load_quiet(source(tmp_path))


def test_constant_image_has_no_usable_slice(tmp_path):
    path = _only_case(tmp_path, labels="none")
    save(path, np.zeros((20, 20, 5), np.float32), np.eye(4))
    with pytest.raises(DafnetError, match="a_0000.nii.gz: no usable slice"):
        load_quiet(source(tmp_path))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("labels"), "lacks the key"),
    (lambda d: d.update(labels={"background": 0, "lesion": 2}), "0..L without gaps"),
    (lambda d: d.update(labels={"background": 0, "tumour": [1, 2]}), "region"),
    (lambda d: d.update(channel_names={"0": "FLAIR", "1": "flair"}), "repeat"),
    (lambda d: d.update(file_ending=".mha"), "not supported"),
])
def test_bad_dataset_json(tmp_path, change, message):
    _only_case(tmp_path)
    info = json.loads((tmp_path / "dataset.json").read_text())
    change(info)
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DafnetError, match=message):
        source(tmp_path)


def test_dataset_json_not_matching_the_files(tmp_path):
    path = _only_case(tmp_path)
    path.rename(tmp_path / "imagesTr" / "a_0003.nii.gz")
    with pytest.raises(DafnetError, match="channel 0003 is not in channel_names"):
        load_quiet(source(tmp_path))
    (tmp_path / "imagesTr" / "a_0003.nii.gz").rename(tmp_path / "imagesTr" / "a_0000.nii")
    with pytest.raises(DafnetError, match="ends in .nii but .* says file_ending '.nii.gz'"):
        load_quiet(source(tmp_path))
    (tmp_path / "imagesTr" / "a_0000.nii").rename(tmp_path / "imagesTr" / "a.nii.gz")
    with pytest.raises(DafnetError, match="<case>_<XXXX>"):
        load_quiet(source(tmp_path))
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(DafnetError, match="dataset.json does not exist"):
        source(tmp_path)


def test_uncompressed_nii_files_are_read(tmp_path):
    path = _only_case(tmp_path)
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), str(path.with_suffix("")))
    path.unlink()
    info = json.loads((tmp_path / "dataset.json").read_text())
    info.pop("file_ending")
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    volume = load_quiet(source(tmp_path))[0].volumes["flair"]
    assert volume.label is not None and volume.label.sum() > 0  # .nii image, .nii.gz label


def test_selected_channel_absent_everywhere(tmp_path):
    make_dataset(tmp_path, channels=("FLAIR", "T1"))
    for case in ("a", "b"):
        (tmp_path / "imagesTr" / f"{case}_0001.nii.gz").unlink()
    with pytest.raises(DafnetError, match=r"channel 0001 \('t1'\) has no image"):
        load_quiet(source(tmp_path, channels=["t1", "flair"]))


# ---------------------------------------------------------------- round trip with the phantom writer
def test_phantom_written_by_the_writer_reads_back_identically(tmp_path):
    from dafnet.data.nnunet_writer import write_nnunet_raw
    from dafnet.data.phantom import PhantomDataSource

    phantom = PhantomDataSource(PhantomDataSource.Params(
        subjects=2, slices=5, slice_count_jitter=1, image_size=(40, 32), modalities=("cine", "lge")))
    subjects = phantom.load()
    root = write_nnunet_raw(subjects, tmp_path / "raw", phantom.modalities, phantom.class_names)
    src = source(root, image_size=[40, 32], intensity={"clip_percentiles": None})
    assert src.modalities == phantom.modalities and src.class_names == phantom.class_names
    for expected, got in zip(subjects, load_quiet(src)):
        assert got.id == expected.id and set(got.volumes) == set(expected.volumes)
        for name, ref in expected.volumes.items():
            vol = got.volumes[name]
            np.testing.assert_array_equal(vol.label, ref.label)
            np.testing.assert_allclose(vol.image, ref.image, atol=1e-5)
            np.testing.assert_allclose(vol.slice_positions, ref.slice_positions, atol=1e-4)
            np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-4)


# ---------------------------------------------------------------- real MR: open_ms (Lesjak et al.)
MNI = "cross_sectional/MNI/patient07/{}_N4_noneck_reduced_winsor_regtoFLAIR{}_regtoMNI.nii.gz"


@pytest.fixture(scope="module")
def open_ms(tmp_path_factory):
    """One MNI case (4 contrasts, single lesion label) and one raw longitudinal case (3 contrasts on
    their own grids, no T1POST, unlabelled), linked into the layout and loaded once."""
    if not OPEN_MS.is_dir():
        pytest.skip(f"{OPEN_MS} is not available")
    root = tmp_path_factory.mktemp("open_ms_nnunet")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    for i, name in enumerate(["FLAIR", "T1", "T1POST", "T2"]):
        (root / "imagesTr" / f"ms07_{i:04d}.nii.gz").symlink_to(OPEN_MS / MNI.format(name, "_brain_N4"))
    (root / "labelsTr" / "ms07.nii.gz").symlink_to(OPEN_MS / MNI.format("GOLD_STANDARD", ""))
    for i, name in [(0, "FLAIR"), (1, "T1W"), (3, "T2W")]:
        (root / "imagesTr" / f"long01_{i:04d}.nii.gz").symlink_to(
            OPEN_MS / f"longitudinal/raw/patient01/study1_{name}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1", "2": "T1POST", "3": "T2"},
        "labels": {"background": 0, "lesion": 1}, "numTraining": 2, "file_ending": ".nii.gz"}))
    src = source(root, image_size=[64, 64], spacing_mm=3.5)
    return src, {s.id: s for s in load_quiet(src)}


def test_open_ms_modalities_shapes_and_lesions(open_ms):
    src, subjects = open_ms
    assert src.modalities == ("flair", "t1", "t1post", "t2") and src.class_names == ("lesion",)
    assert set(subjects["ms07"].volumes) == {"flair", "t1", "t1post", "t2"}
    assert set(subjects["long01"].volumes) == {"flair", "t1", "t2"}
    for subject in subjects.values():
        for volume in subject.volumes.values():
            assert volume.image.shape[1:] == (64, 64) and volume.image.dtype == np.float32
            assert volume.image.min() == -1.0 and volume.image.max() <= 1.0
    ms07 = subjects["ms07"].volumes
    assert ms07["flair"].label.sum() > 0
    np.testing.assert_array_equal(ms07["flair"].label, ms07["t2"].label)
    # the label lands on the lesions: hyperintense on FLAIR compared with the rest of the brain
    brain = (ms07["flair"].image > -0.9) & (ms07["flair"].label == 0)
    lesion = ms07["flair"].label == 1
    assert ms07["flair"].image[lesion].mean() > ms07["flair"].image[brain].mean() + 0.2
    assert all(v.label is None for v in subjects["long01"].volumes.values())


def test_open_ms_raw_sequences_differ_in_geometry_but_share_the_world_frame(open_ms):
    src, subjects = open_ms
    vols = subjects["long01"].volumes
    assert len({v.num_slices for v in vols.values()}) > 1  # 36, 39, 36 slices
    spacings = {n: np.linalg.norm(src.record("long01", n).source_affine[:3, 0]) for n in vols}
    assert spacings["t2"] < 0.6 < spacings["flair"]  # 0.51 mm vs 0.72 mm in-plane
    flair = vols["flair"].slice_positions  # 4 mm apart; t2 4 mm, t1 3 mm over a shorter range
    for name, tolerance in (("t2", 0.1), ("t1", 1.5)):
        other = vols[name].slice_positions
        nearest = np.abs(other[None, :] - flair[:, None]).min(axis=1)
        inside = (flair >= other.min()) & (flair <= other.max())
        assert inside.sum() >= 0.7 * len(flair) and nearest[inside].max() <= tolerance, name

    def brain_centre(volume):  # world centroid of the bright voxels
        idx = np.argwhere(volume.image > -0.5).mean(axis=0)
        return (volume.affine @ np.array([*idx, 1.0]))[:3]

    centres = {n: brain_centre(v) for n, v in vols.items()}
    assert np.linalg.norm(centres["t1"] - centres["flair"]) < 10.0
    assert np.linalg.norm(centres["t2"] - centres["flair"]) < 10.0


def test_a_recipe_builds_the_source_and_its_facts(tmp_path):
    from dafnet.assemble import build_data_source
    from dafnet.config.resolve import parse_recipe, resolve

    make_dataset(tmp_path, channels=("CINE", "LGE"))
    registry.register("data_source", "nnunet", NnUNetDataSource)
    recipe = resolve(parse_recipe({"data": {"source": {"name": "nnunet", "params": {
        "root": str(tmp_path), "image_size": 48, "intensity": {"scope": "volume"},
        "label_map": {"*": {"0": 0, "1": 1}}}}, "target": "lge"}}))
    assert recipe.data.modalities == ["cine", "lge"]
    src, facts = build_data_source(recipe)
    assert isinstance(src, NnUNetDataSource) and src.params.intensity.scope == "volume"
    assert facts.image_size == (48, 48) and facts.num_classes == 1
