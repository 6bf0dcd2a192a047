"""``dafnet evaluate-folder``: a folder of predicted masks scored against a folder of labels (Dice,
3D Dice, HD95 in mm) on tiny synthetic NIfTI volumes whose numbers are computed by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _cli import run_cli

from dafnet.errors import DafnetError
from dafnet.inference.evaluate_folder import evaluate_folder

SPACING = (1.0, 1.0, 2.0)  # slices along the third axis (the thickest)


def save(path: Path, data: np.ndarray, spacing=SPACING) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


def two_cases(root: Path) -> tuple[Path, Path]:
    """case_a: class 1 is a 4x4x4 cube, predicted 1 voxel off along x (overlap 3x4x4 = 48 of 64 each);
    class 2 is a 3x3x3 cube predicted 2 slices (4 mm) off; class 3 is in neither.
    case_b: a perfect prediction of a 2x2x2 cube of class 1."""
    pred, labels = root / "pred", root / "labelsTr"
    truth, guess = np.zeros((12, 12, 10), np.uint8), np.zeros((12, 12, 10), np.uint8)
    truth[2:6, 2:6, 2:6] = 1
    guess[3:7, 2:6, 2:6] = 1
    truth[8:11, 8:11, 0:3] = 2
    guess[8:11, 8:11, 2:5] = 2
    save(labels / "case_a.nii.gz", truth)
    save(pred / "case_a.nii.gz", guess)
    small = np.zeros((12, 12, 10), np.uint8)
    small[5:7, 5:7, 5:7] = 1
    save(labels / "case_b.nii.gz", small)
    save(pred / "case_b.nii.gz", small)
    return pred, labels


def test_dice_and_hd95_match_hand_computed_values(tmp_path):
    pred, labels = two_cases(tmp_path)
    result = evaluate_folder(pred, labels, [1, 2, 3])
    a, b = result.per_case
    assert a["case"] == "case_a" and b["case"] == "case_b"
    # 3D Dice: class 1 2*48/(64+64); class 2: the cubes share one slice, 2*9/(27+27); class 3 absent: NaN
    assert a["dice3d_label1"] == pytest.approx(75.0)
    assert a["dice3d_label2"] == pytest.approx(100 * 18 / 54)
    assert math.isnan(a["dice3d_label3"])
    # HD95 of class 1: every surface voxel lies within 1 mm of the other surface, the shifted faces
    # at exactly 1 mm; class 2, shifted 2 slices of 2 mm: the far faces are 4 mm off (26 surface
    # voxels: 9 at 0, 8 at 2 mm, 9 at 4 mm: the 95th percentile is 4 mm)
    assert a["hd95_label1"] == pytest.approx(1.0)
    assert a["hd95_label2"] == pytest.approx(4.0)
    assert math.isnan(a["hd95_label3"])
    # the paper's Dice per slice (classes pooled), mean over the 10 slices:
    # z=0,1: class 2 missed -> 0; z=2: 2*(12+9)/(16+9+16+9) = 0.84; z=3,4: class 1 0.75 and class 2
    # only predicted: 2*12/(16+16+9) each; z=5: 0.75; z=6..9 empty in both -> 1
    slices = [0, 0, 2 * 21 / 50, 24 / 41, 24 / 41, 0.75, 1, 1, 1, 1]
    assert a["dice"] == pytest.approx(100 * np.mean(slices))
    assert b["dice"] == 100.0 and b["dice3d_label1"] == 100.0 and b["hd95_label1"] == 0.0
    assert math.isnan(b["dice3d_label2"]) and math.isnan(b["hd95_label2"])
    # means over cases leave NaN out and count it
    assert result.mean["dice3d_label1"] == pytest.approx(87.5)
    assert result.mean["hd95_label1"] == pytest.approx(0.5)
    assert result.mean["dice3d_label2"] == pytest.approx(100 * 18 / 54) and result.undefined["dice3d_label2"] == 1
    assert math.isnan(result.mean["dice3d_label3"]) and result.undefined["hd95_label3"] == 2
    assert result.foreground_mean["dice3d"] == pytest.approx((87.5 + 100 * 18 / 54) / 2)


def test_without_a_label_list_every_value_found_is_scored_the_same_way(tmp_path):
    pred, labels = two_cases(tmp_path)
    found = evaluate_folder(pred, labels)
    assert found.labels == {1: "label1", 2: "label2"}
    given = evaluate_folder(pred, labels, [1, 2])
    for row, expected in zip(found.per_case, given.per_case):
        assert row.keys() == expected.keys()
        for key in row:
            assert row[key] == expected[key] or (row[key] != row[key] and expected[key] != expected[key]), key
    only_two = evaluate_folder(pred, labels, [2])
    assert list(only_two.labels) == [2] and "dice3d_label1" not in only_two.per_case[0]


def test_cli_writes_summary_and_per_case_csv_with_dataset_json_names(tmp_path, capsys):
    pred, labels = two_cases(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "lv": 1, "myo": 2, "rv": 3}}))
    save(labels / "case_c.nii.gz", np.zeros((12, 12, 10)))  # a label without a prediction: noted, not scored
    code, out, err = run_cli(capsys, "evaluate-folder", pred, labels)
    assert code == 0, out + err
    assert "lv" in out and "87.50" in out and "1 label file(s) without a prediction" in " ".join(out.split())
    summary = json.loads((pred / "summary.json").read_text())
    assert summary["labels"] == {"1": "lv", "2": "myo", "3": "rv"} and summary["cases"] == 2
    assert summary["mean"]["dice3d_lv"] == pytest.approx(87.5) and summary["mean"]["dice3d_rv"] is None
    assert summary["labels_without_prediction"] == ["case_c"]
    assert summary["per_case"][0]["hd95_myo"] == pytest.approx(4.0)
    with open(pred / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["case_a", "case_b"]
    assert list(rows[0]) == ["case", "dice", "dice3d_lv", "dice3d_myo", "dice3d_rv", "hd95_lv", "hd95_myo",
                             "hd95_rv"]
    assert float(rows[0]["dice3d_lv"]) == pytest.approx(75.0) and rows[0]["dice3d_rv"] == "nan"
    # --out: a folder (created) or a .json file with the CSV beside it
    code, out, err = run_cli(capsys, "evaluate-folder", pred, labels, "--labels", "1", "--out", tmp_path / "r" / "x")
    assert code == 0 and sorted(p.name for p in (tmp_path / "r" / "x").iterdir()) == ["per_case.csv", "summary.json"]
    code, out, err = run_cli(capsys, "evaluate-folder", pred, labels, "--out", tmp_path / "s" / "scores.json")
    assert code == 0 and sorted(p.name for p in (tmp_path / "s").iterdir()) == ["scores.csv", "scores.json"]


def expect_error(capsys, args, pattern: str) -> None:
    code, out, err = run_cli(capsys, "evaluate-folder", *args)
    assert code == 2, out + err
    assert pattern in " ".join((out + err).split()), out + err


def test_errors_name_the_folder_or_file(tmp_path, capsys):
    pred, labels = two_cases(tmp_path)
    expect_error(capsys, [tmp_path / "nowhere", labels], f"predictions folder {tmp_path / 'nowhere'} does not exist")
    expect_error(capsys, [pred, tmp_path / "nolabels"], f"labels folder {tmp_path / 'nolabels'} does not exist")
    (tmp_path / "empty").mkdir()
    expect_error(capsys, [tmp_path / "empty", labels], "holds no NIfTI files")
    expect_error(capsys, [pred, labels, "--labels", "0,1"], "--labels '0,1' is not a list")
    save(pred / "case_x.nii.gz", np.zeros((12, 12, 10)))
    expect_error(capsys, [pred, labels], f"prediction {pred / 'case_x.nii.gz'} has no label file case_x.nii.gz")
    (pred / "case_x.nii.gz").unlink()
    save(pred / "case_b.nii.gz", np.zeros((12, 12, 9)))
    expect_error(capsys, [pred, labels], f"prediction {pred / 'case_b.nii.gz'} has shape (12, 12, 9), its label")
    save(pred / "case_b.nii.gz", np.zeros((12, 12, 10)), spacing=(1.0, 1.0, 2.5))
    expect_error(capsys, [pred, labels], f"prediction {pred / 'case_b.nii.gz'} has voxel spacing 1 x 1 x 2.5 mm")
    nib.save(nib.Nifti1Image(np.full((12, 12, 10), 0.5, np.float32), np.diag([*SPACING, 1.0])),
             str(pred / "case_b.nii.gz"))
    expect_error(capsys, [pred, labels], "voxel values are not integers")
    assert not (pred / "summary.json").exists()


def test_a_prediction_without_a_label_is_a_dafnet_error(tmp_path):
    pred, labels = two_cases(tmp_path)
    (labels / "case_b.nii.gz").unlink()
    with pytest.raises(DafnetError, match="case_b.nii.gz has no label file"):
        evaluate_folder(pred, labels)
