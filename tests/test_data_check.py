"""``dafnet data check``: per-case tables and exit codes on a good folder and on broken ones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from _cli import run_cli

from dafnet.data.nnunet_writer import write_nnunet_raw
from dafnet.data.phantom import PhantomDataSource
from dafnet.inference.data_check import check_cases, nnunet_cases


def run(capsys, *args) -> tuple[int, str]:
    code, out, err = run_cli(capsys, *args)
    return code, " ".join((out + err).split())


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    phantom = PhantomDataSource(PhantomDataSource.Params(subjects=2, slices=4, image_size=32, seed=1))
    return write_nnunet_raw(phantom.load(), tmp_path_factory.mktemp("check") / "raw",
                            phantom.modalities, phantom.class_names)


@pytest.fixture
def copy(good, tmp_path):
    return shutil.copytree(good, tmp_path / "raw")


def test_good_folder_prints_a_table_per_case_and_exits_0(good, capsys):
    code, out = run(capsys, "data", "check", good)
    assert code == 0, out
    for case in ("phantom_000", "phantom_001"):
        assert f"case {case}: usable" in out
    assert "32x32x4" in out and "0,1,2,3" in out and "to lge mm med/max" in out
    assert "2 case(s): 2 usable, 0 unusable, 0 warning(s)" in out


def test_pairing_distances_are_the_nearest_slice_distances(good):
    cases, modalities, classes, _ = nnunet_cases(good, None)
    (report, _) = check_cases(cases, modalities, classes, {"image_size": 32}, "lge")
    positions = json.loads((good / "dataset.json").read_text())["dafnet"]["slice_positions_mm"]["phantom_000"]
    cine, lge = np.array(positions["cine"]), np.array(positions["lge"])
    distance = np.abs(cine[None, :] - lge[:, None]).min(axis=1)
    median, largest = report.volumes["cine"].pairing_mm
    assert median == pytest.approx(np.median(distance), abs=1e-3)
    assert largest == pytest.approx(distance.max(), abs=1e-3)
    assert report.volumes["lge"].pairing_mm is None and report.volumes["lge"].labels == [0, 1, 2, 3]
    assert report.volumes["cine"].shape == (32, 32, 4) and report.volumes["cine"].slices == 4


def test_a_corrupt_file_makes_its_case_unusable_and_exits_2(copy, capsys):
    (copy / "imagesTr" / "phantom_001_0000.nii.gz").write_bytes(b"garbage")
    code, out = run(capsys, "data", "check", copy)
    assert code == 2, out
    assert "case phantom_000: usable" in out and "case phantom_001: unusable" in out
    assert "phantom_001_0000.nii.gz: not a readable NIfTI file" in out
    assert "1 case(s) cannot be used: phantom_001" in out


def test_labels_outside_the_classes_and_on_another_grid(copy, capsys):
    import nibabel as nib

    label = nib.load(str(copy / "labelsTr" / "phantom_000_0001.nii.gz"))
    data = np.asarray(label.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, label.affine), str(copy / "labelsTr" / "phantom_000_0001.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), label.affine),
             str(copy / "labelsTr" / "phantom_001_0000.nii.gz"))
    code, out = run(capsys, "data", "check", copy)
    assert code == 2, out
    assert "label values [7] are not classes 0..3" in out
    assert "differs from image" in out and "phantom_001_0000.nii.gz" in out
    assert "2 usable" not in out and "0 usable, 2 unusable" in out


def test_missing_sequences_are_warnings_not_errors(copy, capsys):
    (copy / "imagesTr" / "phantom_000_0000.nii.gz").unlink()
    (copy / "labelsTr" / "phantom_000_0000.nii.gz").unlink()
    (copy / "imagesTr" / "phantom_001_0001.nii.gz").unlink()
    code, out = run(capsys, "data", "check", copy)
    assert code == 0, out
    assert "no cine: the case is left out of training streams" in out
    assert "no 'lge' (target) image" in out
    assert "2 usable, 0 unusable, 2 warning(s)" in out


def test_layout_errors_exit_2(copy, tmp_path, capsys):
    (copy / "dataset.json").write_text("{not json")
    code, out = run(capsys, "data", "check", copy)
    assert code == 2 and "is not valid JSON" in out
    code, out = run(capsys, "data", "check", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in out
    code, out = run(capsys, "data", "check")
    assert code == 2 and "give a PATH or --recipe" in out


def test_with_a_recipe_uses_its_params_and_its_folder(good, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "r", "data": {"source": {"name": "nnunet", "params": {
            "root": str(good), "image_size": 24, "channels": {"late": "lge", "cine": "cine"}}},
            "target": "late"}}))
    code, out = run(capsys, "data", "check", "--recipe", recipe)
    assert code == 0, out
    assert "to late mm med/max" in out and "late" in out
    code, out = run(capsys, "data", "check", tmp_path / "nowhere", "--recipe", recipe)
    assert code == 2 and "nowhere" in out


def test_a_datalist_json_is_checked_too(good, tmp_path, capsys):
    entries = [{"id": c, "image": {m: str(good / "imagesTr" / f"{c}_{i:04d}.nii.gz")
                                   for i, m in enumerate(["cine", "lge"])}}
               for c in ("phantom_000", "phantom_001")]
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"labels": {"0": "background", "1": "lv", "2": "myo", "3": "rv"},
                                    "training": entries}))
    code, out = run(capsys, "data", "check", datalist)
    assert code == 0, out
    assert "case phantom_001: usable" in out and "labels" in out


def test_no_case_at_all_exits_2_after_the_report(copy, capsys):
    for path in (copy / "imagesTr").iterdir():
        path.unlink()
    code, out = run(capsys, "data", "check", copy)
    assert code == 2, out
    assert "0 case(s): 0 usable" in out and "holds no case" in out


def test_a_sequence_without_any_image_exits_2_like_training(copy, capsys):
    for path in (copy / "imagesTr").glob("*_0000.nii.gz"):
        path.unlink()
    code, out = run(capsys, "data", "check", copy)
    assert code == 2, out
    assert "2 case(s): 2 usable" in out and "no case has an image of 'cine'" in out


def _relabel(path, change):
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj).copy()
    change(data)
    nib.save(nib.Nifti1Image(data, image.affine), str(path))


def test_messages_name_the_users_files_and_cases_not_the_staging(copy, capsys):
    _relabel(copy / "labelsTr" / "phantom_000_0001.nii.gz", lambda d: d.__setitem__((0, 0, 0), 7))
    shared = copy / "labelsTr" / "phantom_001.nii.gz"  # one label for both (unaligned) channels
    (copy / "labelsTr" / "phantom_001_0000.nii.gz").rename(shared)
    (copy / "labelsTr" / "phantom_001_0001.nii.gz").unlink()
    code, out = run(capsys, "data", "check", copy)
    assert code == 2, out
    assert f"label values [7] are not classes 0..3 of {copy / 'dataset.json'}" in out
    assert f"the single label {shared} of case 'phantom_001'" in out
    assert "give per-channel labels labelsTr/phantom_001_XXXX" in out
    assert "dafnet-staged" not in out and "case0000" not in out


def test_a_datalist_names_its_own_file(copy, tmp_path, capsys):
    from dafnet.data.datalist import DatalistDataSource
    from dafnet.errors import DafnetError

    label = copy / "labelsTr" / "phantom_000_0001.nii.gz"
    _relabel(label, lambda d: d.__setitem__((0, 0, 0), 7))
    images = {m: str(copy / "imagesTr" / f"phantom_000_{i:04d}.nii.gz") for i, m in enumerate(["cine", "lge"])}
    datalist = tmp_path / "list.json"

    def write(entry_label):
        datalist.write_text(json.dumps({
            "labels": {"0": "background", "1": "lv", "2": "myo", "3": "rv"},
            "training": [{"id": "p0", "image": images, "label": entry_label}]}))

    write({"lge": str(label)})
    with pytest.raises(DafnetError) as info:
        DatalistDataSource(DatalistDataSource.Params(path=str(datalist), image_size=32)).load()
    assert f"not classes 0..3 of {datalist}" in str(info.value) and "dafnet-staged" not in str(info.value)
    code, out = run(capsys, "data", "check", datalist)
    assert code == 2, out
    assert f"are not classes 0..3 of {datalist}" in " ".join(out.split())
    write(str(label))  # one label for both sequences, on the lge grid only
    code, out = run(capsys, "data", "check", datalist)
    assert code == 2, out
    assert '(a "label": {sequence: file} mapping in the entry of \'p0\')' in out
    assert "dafnet-staged" not in out and "case0000" not in out and "labelsTr/p0" not in out
