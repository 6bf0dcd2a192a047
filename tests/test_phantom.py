"""The built-in phantom data source and the nnU-Net raw writer."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
from pydantic import ValidationError

import dafnet.interfaces
from dafnet.builder import build
from dafnet.config.errors import RecipeError
from dafnet.data import nnunet_writer
from dafnet.data.nnunet_writer import nifti_to_volume, write_nnunet_raw
from dafnet.data.phantom import CLASS_NAMES, PhantomDataSource, write_phantom
from dafnet.errors import DafnetError

Params = PhantomDataSource.Params


def load(**kw):
    return PhantomDataSource(Params(**kw)).load()


@pytest.fixture(scope="module")
def default_subjects():
    return PhantomDataSource(Params(modalities=("cine", "lge", "t2"))).load()


def assert_same_subject(a, b, modalities=None):
    assert a.id == b.id
    for name in modalities or a.volumes:
        va, vb = a.volumes[name], b.volumes[name]
        assert np.array_equal(va.image, vb.image)
        assert np.array_equal(va.label, vb.label)
        assert np.array_equal(va.slice_positions, vb.slice_positions)
        assert np.array_equal(va.affine, vb.affine)


def nearest_dice(a, b):
    """Foreground Dice of each slice of ``a`` with the nearest slice of ``b``."""
    out = []
    for i, pos in enumerate(a.slice_positions):
        j = int(np.argmin(np.abs(b.slice_positions - pos)))
        fa, fb = a.label[i] > 0, b.label[j] > 0
        out.append(2 * (fa & fb).sum() / (fa.sum() + fb.sum()))
    return np.array(out)


def test_deterministic_and_seeded():
    a, b = load(subjects=3, seed=5), load(subjects=3, seed=5)
    for sa, sb in zip(a, b):
        assert_same_subject(sa, sb)
    other = load(subjects=3, seed=6)
    assert not np.array_equal(a[0].volumes["cine"].image, other[0].volumes["cine"].image)


def test_subject_does_not_depend_on_count_or_other_modalities():
    few, many = load(subjects=2), load(subjects=5)
    for sa, sb in zip(few, many[:2]):
        assert_same_subject(sa, sb)
    three = load(subjects=2, modalities=("t2", "cine", "lge"))
    assert_same_subject(few[1], three[1], modalities=("cine", "lge"))
    assert list(three[0].volumes) == ["t2", "cine", "lge"]


def test_shapes_dtypes_ranges(default_subjects):
    source = PhantomDataSource(Params(modalities=("cine", "lge", "t2")))
    assert source.image_size == (64, 64) and source.class_names == CLASS_NAMES
    assert [s.id for s in default_subjects] == [f"phantom_{i:03d}" for i in range(12)]
    for subject in default_subjects:
        assert set(subject.volumes) == {"cine", "lge", "t2"}
        for volume in subject.volumes.values():
            assert volume.image.shape == (8, 64, 64) and volume.image.dtype == np.float32
            assert volume.label.shape == (8, 64, 64) and volume.label.dtype == np.int64
            assert np.allclose(volume.image.min(axis=(1, 2)), -1) and np.allclose(
                volume.image.max(axis=(1, 2)), 1)
            assert set(np.unique(volume.label)) <= {0, 1, 2, 3}
            assert volume.slice_positions.dtype == np.float64
            assert np.all(np.diff(volume.slice_positions) > 0)


def test_non_square_spacing_and_affine():
    subject = PhantomDataSource(Params(subjects=1, image_size=[48, 80], spacing_mm=2.5)).subject(0)
    for volume in subject.volumes.values():
        assert volume.image.shape == (8, 48, 80)
        affine = volume.affine
        assert affine.shape == (4, 4) and np.allclose(affine[3], [0, 0, 0, 1])
        assert np.allclose(np.linalg.norm(affine[:3, 1]), 2.5)
        assert np.allclose(np.linalg.norm(affine[:3, 2]), 2.5)
        voxels = np.stack([np.arange(8), np.zeros(8), np.zeros(8), np.ones(8)])
        assert np.allclose((affine @ voxels)[2], volume.slice_positions)
        centre = affine @ [0, (48 - 1) / 2, (80 - 1) / 2, 1]
        assert np.allclose(centre[:2], 0)


def test_slice_count_jitter_gives_stacks_of_different_lengths():
    subjects = load(subjects=6, slices=8, slice_count_jitter=2)
    counts = {v.num_slices for s in subjects for v in s.volumes.values()}
    assert len(counts) > 1 and counts <= set(range(6, 11))


def test_all_labels_in_mid_ventricular_slices(default_subjects):
    for subject in default_subjects:
        for volume in subject.volumes.values():
            for s in (2, 3):  # about a quarter to a half of the way from base to apex
                assert set(np.unique(volume.label[s])) == {0, 1, 2, 3}, (subject.id, s)


def test_base_to_apex_lv_shrinks_and_rv_disappears(default_subjects):
    rv_base = rv_apex = 0
    for subject in default_subjects:
        for volume in subject.volumes.values():
            lv = (volume.label == 1).sum(axis=(1, 2))
            assert lv[0] > lv[-1] > 0
            rv_base += (volume.label[0] == 3).any()
            rv_apex += (volume.label[-1] == 3).any()
    n = 3 * len(default_subjects)
    assert rv_base == n
    assert rv_apex < 0.3 * n


def test_modalities_are_not_aligned(default_subjects):
    dice = np.concatenate([nearest_dice(s.volumes["cine"], s.volumes["lge"])
                           for s in default_subjects])
    assert 0.4 < dice.mean() < 0.92
    assert dice.max() < 0.99 and dice.min() > 0.0
    still = load(max_shift_mm=0, max_rotation_degrees=0, deformation_mm=0)
    still_dice = np.concatenate([nearest_dice(s.volumes["cine"], s.volumes["lge"]) for s in still])
    assert still_dice.mean() > dice.mean() + 0.05


def test_contrasts_differ(default_subjects):
    def myo_minus_blood(name):
        return np.array([np.median(v.image[v.label == 2]) - np.median(v.image[v.label == 1])
                         for v in (s.volumes[name] for s in default_subjects)])

    assert np.all(myo_minus_blood("cine") < 0)  # bright blood, grey myocardium
    assert np.all(myo_minus_blood("lge") < 0)  # nulled myocardium
    assert np.all(myo_minus_blood("t2") > 0)  # black blood

    def enhanced_fraction(name):  # myocardium brighter than the mean blood pool
        vols = [s.volumes[name] for s in default_subjects]
        return np.mean([(v.image[v.label == 2] > v.image[v.label == 1].mean()).mean() for v in vols])

    assert enhanced_fraction("cine") < 0.005
    assert enhanced_fraction("lge") > 0.02  # scar


def test_fast_enough():
    source = PhantomDataSource(Params())
    start = time.process_time()
    source.load()
    assert time.process_time() - start < 3.0


@pytest.mark.parametrize("bad", [
    {"subjects": 0}, {"slices": 0}, {"image_size": 8}, {"image_size": [64]},
    {"modalities": ["ct"]}, {"modalities": ["cine", "cine"]}, {"modalities": []},
    {"noise": -0.1}, {"deformation_mm": -1}, {"spacing_mm": 0}, {"seed": -1}, {"colour": 1},
])
def test_params_validation(bad):
    with pytest.raises(ValidationError):
        Params(**bad)
    with pytest.raises(RecipeError):
        build("data_source", "phantom", bad, dafnet.interfaces.Facts())


def test_registry_builds_it():
    source = build("data_source", "phantom", {"subjects": 2}, dafnet.interfaces.Facts())
    assert isinstance(source, PhantomDataSource)
    assert isinstance(source, dafnet.interfaces.DataSource)
    assert source.declared_facts() == {
        "image_size": (64, 64), "modalities": ("cine", "lge"), "num_classes": 3,
        "class_names": ("lv", "myocardium", "rv")}
    assert len(source.load()) == 2


def test_nnunet_round_trip(tmp_path):
    params = Params(subjects=2, slices=5, modalities=("cine", "lge", "t2"), image_size=[40, 48])
    out = write_phantom(tmp_path / "ds", params)
    subjects = PhantomDataSource(params).load()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "cine", "1": "lge", "2": "t2"}
    assert meta["labels"] == {"background": 0, "lv": 1, "myocardium": 2, "rv": 3}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["dafnet"]["per_channel_labels"] is True and meta["dafnet"]["source"] == "phantom"
    assert meta["dafnet"]["params"]["image_size"] == [40, 48]
    for subject in subjects:
        for channel, name in enumerate(params.modalities):
            volume = subject.volumes[name]
            stem = f"{subject.id}_{channel:04d}.nii.gz"
            image = nib.load(out / "imagesTr" / stem)
            assert image.shape == (48, 40, 5)  # (W, H, S)
            array, affine = nifti_to_volume(image)
            assert np.array_equal(array, volume.image)
            assert np.allclose(affine, volume.affine, atol=1e-4)
            label, label_affine = nifti_to_volume(nib.load(out / "labelsTr" / stem))
            assert np.array_equal(label.astype(np.int64), volume.label)
            assert np.allclose(label_affine, volume.affine, atol=1e-4)
            # world z of voxel (i, j, k) is the slice position of slice k
            k = np.arange(5)
            world = image.affine @ np.stack([np.zeros(5), np.zeros(5), k, np.ones(5)])
            assert np.allclose(world[2], volume.slice_positions, atol=1e-4)
            assert meta["dafnet"]["slice_positions_mm"][subject.id][name] == pytest.approx(
                list(volume.slice_positions))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_writer_refuses_to_overwrite_and_replaces_on_request(tmp_path):
    out = tmp_path / "ds"
    params = Params(subjects=1, slices=2, image_size=32)
    write_phantom(out, params)
    (out / "imagesTr" / "phantom_000_0000.nii.gz").unlink()  # a dataset dafnet wrote, altered
    with pytest.raises(DafnetError) as info:
        write_phantom(out, params)
    assert "not empty" in info.value.message and "overwrite=True" in info.value.hint
    assert "--overwrite" not in info.value.hint  # the Python API names its own argument
    write_phantom(out, params, overwrite=True)
    assert (out / "imagesTr" / "phantom_000_0000.nii.gz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_phantom(empty, params)  # an empty folder is fine
    assert (empty / "dataset.json").exists()


@pytest.mark.parametrize("arrange, reason", [
    (lambda d: (d / "keep.txt").write_text("x"), "it holds keep.txt"),
    (lambda d: (d / "dataset.json").write_text('{"name": "theirs"}'), 'has no "dafnet" section'),
    (lambda d: (d / "imagesTr").mkdir(), "it has no dataset.json"),
    (lambda d: (d / "dataset.json").write_text("{oops"), "not valid JSON"),
])
def test_overwrite_never_deletes_a_folder_dafnet_did_not_write(tmp_path, arrange, reason):
    out = tmp_path / "ds"
    out.mkdir()
    arrange(out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(DafnetError) as info:
        write_phantom(out, Params(subjects=1, slices=2, image_size=32), overwrite=True)
    assert "does not look like a dataset written by dafnet" in info.value.message
    assert reason in info.value.message and str(out) in info.value.message
    assert sorted(p.name for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_overwrite_refuses_extra_files_inside_a_written_dataset(tmp_path):
    out = write_phantom(tmp_path / "ds", Params(subjects=1, slices=2, image_size=32))
    (out / "labelsTr" / "notes.txt").write_text("mine")
    with pytest.raises(DafnetError, match="labelsTr/ holds notes.txt"):
        write_phantom(out, Params(subjects=1, slices=2, image_size=32), overwrite=True)
    assert (out / "labelsTr" / "notes.txt").exists()


def test_unwritable_paths_are_clear_errors(tmp_path):
    params = Params(subjects=1, slices=2, image_size=32)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile / "ds", afile / "a" / "ds"):
        with pytest.raises(DafnetError) as info:
            write_phantom(target, params)
        assert str(target) in info.value.message and f"{afile} is a file, not a folder" in info.value.message
    with pytest.raises(DafnetError, match="exists and is not a folder"):
        write_phantom(afile, params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_failing_folder_creation_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    real_mkdir = type(tmp_path).mkdir

    def mkdir(self, *args, **kw):
        if self.name.startswith(".ds.tmp-"):
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_mkdir(self, *args, **kw)

    monkeypatch.setattr(type(tmp_path), "mkdir", mkdir)
    with pytest.raises(DafnetError) as info:
        write_phantom(tmp_path / "new" / "ds", Params(subjects=1, slices=2, image_size=32))
    message = info.value.message
    assert message.startswith(f"cannot write {tmp_path / 'new' / 'ds'}: cannot create a folder in")
    assert "No such file or directory" in message and ".tmp-" not in message
    assert list(tmp_path.iterdir()) == []  # the parent made for it is gone again


def test_phantom_cli_errors(tmp_path, capsys):
    from _cli import run_cli

    for value, expected in (("", "--modalities '' names no modality"),
                            (" , ", "names no modality"),
                            ("cine,,lge", "has an empty name")):
        code, out, err = run_cli(capsys, "data", "phantom", tmp_path / "x", "--modalities", value)
        assert code == 2 and expected in " ".join((out + err).split()), out + err
    assert not (tmp_path / "x").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out, err = run_cli(capsys, "data", "phantom", afile / "ph")
    text = " ".join((out + err).split())
    assert code == 2 and f"{afile} is a file, not a folder" in text and "Traceback" not in text
    ds = tmp_path / "ds"
    args = ("data", "phantom", ds, "--subjects", "1", "--slices", "2", "--image-size", "32")
    assert run_cli(capsys, *args)[0] == 0
    code, out, err = run_cli(capsys, *args)
    text = " ".join((out + err).split())
    assert code == 2 and "pass --overwrite to replace it" in text and "overwrite=True" not in text
    assert run_cli(capsys, *args, "--overwrite")[0] == 0
    (ds / "notes.txt").write_text("mine")
    code, out, err = run_cli(capsys, *args, "--overwrite")
    text = " ".join((out + err).split())
    assert code == 2 and "it holds notes.txt); --overwrite only replaces those" in text
    assert (ds / "notes.txt").exists()


def test_writer_leaves_nothing_half_written(tmp_path, monkeypatch):
    subjects = load(subjects=2, slices=2, image_size=32)
    calls = []
    real_save = nib.save

    def failing_save(img, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_save(img, path)

    monkeypatch.setattr(nnunet_writer.nib, "save", failing_save)
    with pytest.raises(DafnetError, match="cannot write .*ds: disk full; nothing was written"):
        write_nnunet_raw(subjects, tmp_path / "ds", ("cine", "lge"), CLASS_NAMES)
    assert len(calls) == 3  # two files were written before the failure
    assert list(tmp_path.iterdir()) == []


def test_writer_records_missing_channels_and_rejects_bad_input(tmp_path):
    subjects = load(subjects=2, slices=2, image_size=32)
    del subjects[1].volumes["lge"]
    subjects[0].volumes["cine"].label = None
    out = write_nnunet_raw(subjects, tmp_path / "ds", ("cine", "lge"), CLASS_NAMES,
                           metadata={"source": "test"})
    meta = json.loads((out / "dataset.json").read_text())["dafnet"]
    assert meta["missing_channels"] == {"phantom_001": ["lge"]}
    assert meta["unlabelled_channels"] == {"phantom_000": ["cine"]}
    assert not (out / "labelsTr" / "phantom_000_0000.nii.gz").exists()
    assert not (out / "imagesTr" / "phantom_001_0001.nii.gz").exists()
    with pytest.raises(DafnetError):
        write_nnunet_raw(subjects, tmp_path / "x", ("cine", "lge"), ("lv",))  # labels up to 3
    with pytest.raises(DafnetError):
        write_nnunet_raw(subjects, tmp_path / "x", ("t2",), CLASS_NAMES)  # no such modality
    with pytest.raises(DafnetError):
        write_nnunet_raw([], tmp_path / "x", ("cine",), CLASS_NAMES)


def test_write_phantom_checks_the_folder_before_generating(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("x")

    def never(self):
        raise AssertionError("generated before the folder was checked")

    monkeypatch.setattr(PhantomDataSource, "load", never)
    with pytest.raises(DafnetError, match="not empty"):
        write_phantom(tmp_path / "ds", Params(subjects=1, slices=2, image_size=32))
