"""``spacing_mm: auto``: the median in-plane spacing of the training subjects' images (nnU-Net's
plan), from the headers of the training split only; recorded in the run (plans.json) and the
export (``plans``); ``dafnet predict`` resamples each input to it and restores the mask to the
input grid. Exports with a number or null predict as before."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _cli import run_cli
from rich.console import Console

from dafnet.config.schema import DataConfig
from dafnet.data.datalist import DatalistDataSource
from dafnet.data.nnunet import NnUNetDataSource
from dafnet.data.plans import plan_data, stored_spacing
from dafnet.data.splits import split_subjects
from dafnet.errors import DafnetError
from dafnet.inference.predictor import Predictor

SPACINGS = {"c0": (0.7, 0.8), "c1": (0.9, 1.0), "c2": (1.1, 1.3), "c3": (1.6, 1.5), "c4": (2.2, 2.0)}
"""Case -> (x, y) voxel size in mm of cine; lge is 10% coarser. The axial stacks' rows run along y
(anterior -> posterior) and columns along x, so the stack's (row, col) spacing is (y, x)."""
SPLIT = {"folds": 1, "train": 0.4, "validation": 0.2, "test": 0.4, "seed": 0}
TINY_MODEL = {
    "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": 4, "depth": 2}},
    "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
    "segmentor": {"name": "conv_head", "params": {"filters": 8}},
    "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
}


def save(path: Path, data, affine) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def disc(spacing, size=48, slices=3, seed=0):
    """(image, label, affine): noise with a bright disc of 12 mm radius at the centre, at ``spacing`` (x, y)."""
    rng = np.random.default_rng(seed)
    x = (np.arange(size) - (size - 1) / 2) * spacing[0]
    y = (np.arange(size) - (size - 1) / 2) * spacing[1]
    inside = (x[:, None] ** 2 + y[None, :] ** 2) < 12.0 ** 2
    label = np.repeat(inside[:, :, None], slices, axis=2).astype(np.uint8)
    image = rng.normal(10.0, 2.0, (size, size, slices)) + 80.0 * label
    affine = np.diag([spacing[0], spacing[1], 4.0, 1.0])
    return image.astype(np.float32), label, affine


def write_dataset(root: Path, spacings=SPACINGS, folder="imagesTr", labels=True) -> Path:
    (root / "dataset.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "cine", "1": "lge"}, "labels": {"background": 0, "lv": 1},
        "file_ending": ".nii.gz"}))
    for n, (case, (sx, sy)) in enumerate(spacings.items()):
        for channel, factor in ((0, 1.0), (1, 1.1)):
            image, label, affine = disc((sx * factor, sy * factor), seed=10 * n + channel)
            save(root / folder / f"{case}_{channel:04d}.nii.gz", image, affine)
            if labels:
                save(root / "labelsTr" / f"{case}_{channel:04d}.nii.gz", label, affine)
    return root


def expected_median(cases) -> tuple[float, float]:
    """(row, col) median over the cases' cine and lge images."""
    rows = [SPACINGS[c][1] * f for c in cases for f in (1.0, 1.1)]
    cols = [SPACINGS[c][0] * f for c in cases for f in (1.0, 1.1)]
    return float(np.median(rows)), float(np.median(cols))


def data_config(**split) -> DataConfig:
    return DataConfig.model_validate({"source": {"name": "nnunet"}, "modalities": ["cine", "lge"],
                                      "target": "lge", "split": {**SPLIT, **split}})


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("planned") / "raw")


# ---------------------------------------------------------------- the plan
def test_auto_is_the_median_of_the_training_split_only(raw, monkeypatch):
    source = NnUNetDataSource(NnUNetDataSource.Params(root=str(raw), image_size=32))
    assert source.params.spacing_mm == "auto"  # the default
    train = split_subjects(list(SPACINGS), data_config().split, labelled=set(SPACINGS))["train"]
    assert len(train) == 2
    expected = expected_median(train)
    assert not np.allclose(expected, expected_median(SPACINGS), atol=0.01)  # the split matters here
    monkeypatch.setattr(nib.Nifti1Image, "get_fdata", lambda *a, **k: pytest.fail("decoded an image"))
    plans = plan_data(source, data_config())  # from the headers only
    monkeypatch.undo()
    np.testing.assert_allclose(plans["spacing_mm"], expected, atol=1e-6)
    assert plans["subjects"] == 2 and plans["images"] == 4 and "median" in plans["rule"]
    for subject in source.load():  # every volume resampled to it
        for volume in subject.volumes.values():
            np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, 1:3], axis=0), expected, atol=1e-6)


def test_a_source_loaded_without_a_plan_uses_every_case(raw):
    source = NnUNetDataSource(NnUNetDataSource.Params(root=str(raw), image_size=32))
    volume = source.load()[0].volumes["cine"]
    np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, 1:3], axis=0), expected_median(SPACINGS), atol=1e-6)


def test_a_number_or_null_needs_no_plan_and_a_stored_plan_wins(raw):
    for value, spacing in ((None, (SPACINGS["c0"][1], SPACINGS["c0"][0])), (1.25, (1.25, 1.25))):
        source = NnUNetDataSource(NnUNetDataSource.Params(root=str(raw), image_size=32, spacing_mm=value))
        assert plan_data(source, data_config()) is None
        volume = source.load()[0].volumes["cine"]
        np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, 1:3], axis=0), spacing, atol=1e-5)
    source = NnUNetDataSource(NnUNetDataSource.Params(root=str(raw), image_size=32))
    stored = {"spacing_mm": [1.5, 1.75], "rule": "x", "subjects": 9, "images": 9}
    assert plan_data(source, data_config(), stored) == stored
    volume = source.load()[0].volumes["lge"]
    np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, 1:3], axis=0), (1.5, 1.75), atol=1e-6)
    with pytest.raises(DafnetError, match="cannot plan"):
        source.use_spacing((2.0, 2.0))
    other = NnUNetDataSource(NnUNetDataSource.Params(root=str(raw), image_size=32))
    with pytest.raises(DafnetError, match="spacing_mm: auto but it stores no planned spacing"):
        plan_data(other, data_config(), {}, where="export X")
    assert stored_spacing({"spacing_mm": 2}) == (2.0, 2.0) and stored_spacing({"spacing_mm": "auto"}) is None


def test_the_datalist_source_plans_the_same_way(raw, tmp_path):
    def files(folder: str, case: str) -> dict[str, str]:
        return {m: str(raw / folder / f"{case}_{i:04d}.nii.gz") for i, m in enumerate(["cine", "lge"])}

    entries = [{"id": c, "image": files("imagesTr", c), "label": files("labelsTr", c)} for c in SPACINGS]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"labels": {"0": "background", "1": "lv"}, "modality": ["cine", "lge"],
                                "training": entries}))
    source = DatalistDataSource(DatalistDataSource.Params(path=str(path), image_size=32))
    assert source.params.spacing_mm == "auto"
    nnunet = NnUNetDataSource(NnUNetDataSource.Params(root=str(raw), image_size=32))
    assert plan_data(source, data_config()) == plan_data(nnunet, data_config())
    a, b = source.load(), nnunet.load()
    np.testing.assert_allclose(a[3].volumes["lge"].image, b[3].volumes["lge"].image, atol=1e-6)


# ---------------------------------------------------------------- a run, its export, predict
@pytest.fixture(scope="module")
def trained(raw, tmp_path_factory):
    from dafnet.config.resolve import parse_recipe, resolve
    from dafnet.engine import train

    recipe = resolve(parse_recipe({
        "name": "planned", "data": {"source": {"name": "nnunet", "params": {"root": str(raw), "image_size": 32}},
                                    "modalities": ["cine", "lge"], "target": "lge", "split": SPLIT},
        "model": TINY_MODEL,
        "train": {"epochs": 1, "iterations_per_epoch": 1, "batch_size": 2, "swa_start": None},
        "output": {"tensorboard": False, "figures": False}}))
    run = tmp_path_factory.mktemp("planned_run") / "run"
    train(recipe, run_dir=run, console=Console(file=io.StringIO()))
    return run


def test_the_plan_is_recorded_in_the_run_and_the_export(trained):
    splits = json.loads((trained / "splits.json").read_text())
    plans = json.loads((trained / "plans.json").read_text())
    np.testing.assert_allclose(plans["spacing_mm"], expected_median(splits["train"]), atol=1e-6)
    index = json.loads((trained / "export" / "dafnet_index.json").read_text())
    assert index["plans"] == plans and index["format_version"] == 3
    assert index["recipe"]["data"]["source"]["params"]["spacing_mm"] == "auto"
    assert Predictor(trained).preprocessing["spacing_mm"] == plans["spacing_mm"]


def test_predict_resamples_an_input_at_another_spacing_and_restores_its_grid(trained, tmp_path, capsys):
    planned = json.loads((trained / "plans.json").read_text())["spacing_mm"]
    inputs = write_dataset(tmp_path / "in", {"new": (0.5, 0.6)}, folder="imagesTs", labels=False)
    code, out, err = run_cli(capsys, "predict", trained, "--input", inputs, "--out", tmp_path / "pred")
    assert code == 0, out + err
    image = nib.load(str(inputs / "imagesTs" / "new_0001.nii.gz"))
    mask = nib.load(str(tmp_path / "pred" / "new.nii.gz"))
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    predictor = Predictor(trained)
    files = {m: inputs / "imagesTs" / f"new_{i:04d}.nii.gz" for i, m in enumerate(("cine", "lge"))}
    result = predictor.predict_case("new", files)
    # the networks saw the input at the planned spacing: 48 px x (0.66, 0.55) mm / planned
    fov = (48 * 0.66, 48 * 0.55)
    expected = tuple(max(32, int(round(f / p))) for f, p in zip(fov, planned))
    assert result.prediction.shape[1:] == expected


def test_exports_with_null_or_a_number_predict_as_before_and_auto_without_a_number_is_refused(
        trained, tmp_path, capsys):
    inputs = write_dataset(tmp_path / "in", {"new": (0.5, 0.6)}, folder="imagesTs", labels=False)
    files = {m: inputs / "imagesTs" / f"new_{i:04d}.nii.gz" for i, m in enumerate(("cine", "lge"))}
    for value, grid in ((None, (48, 48)), (1.5, (32, 32))):
        old = tmp_path / f"old_{value}"
        shutil.copytree(trained / "export", old)
        index = json.loads((old / "dafnet_index.json").read_text())
        index["recipe"]["data"]["source"]["params"]["spacing_mm"] = value
        del index["plans"]
        index["format_version"] = 2
        (old / "dafnet_index.json").write_text(json.dumps(index))
        predictor = Predictor(old)
        assert predictor.preprocessing["spacing_mm"] == value
        assert predictor.predict_case("new", files).prediction.shape[1:] == grid
    broken = tmp_path / "broken"
    shutil.copytree(trained / "export", broken)
    index = json.loads((broken / "dafnet_index.json").read_text())
    del index["plans"]
    (broken / "dafnet_index.json").write_text(json.dumps(index))
    code, out, err = run_cli(capsys, "predict", broken, "--input", inputs, "--out", tmp_path / "o")
    assert code == 2 and "spacing_mm: auto but it stores no planned spacing" in " ".join((out + err).split())
    assert not (tmp_path / "o").exists()


def test_a_resumed_run_keeps_the_spacing_it_recorded(trained, tmp_path, capsys):
    """--resume reads plans.json rather than planning again (the weights were trained at it)."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "plans.json").write_text(json.dumps({"spacing_mm": [1.5, 1.25], "rule": "edited"}))
    code, out, err = run_cli(capsys, "train", "--resume", run, "train.epochs=2")
    assert code == 0, out + err
    index = json.loads((run / "export" / "dafnet_index.json").read_text())
    assert index["plans"] == {"spacing_mm": [1.5, 1.25], "rule": "edited"}
