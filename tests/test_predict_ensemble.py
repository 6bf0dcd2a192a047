"""``dafnet predict`` as nnU-Net predicts: ``--save-probabilities`` (``<case>.npz`` + ``<case>.json``),
ensembles of exports (``dafnet predict RUN1 RUN2``: mean probabilities, then the argmax) and
test-time mirroring (``--mirror``: the mean over the in-plane flips, undone on the output)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _cli import run_cli
from rich.console import Console

from dafnet.cli import main
from dafnet.inference.ensemble import Ensemble
from dafnet.inference.predictor import Predictor
from dafnet.inference.sliding_window import MIRROR_AXES, mirrored

CASES = ["phantom_000", "phantom_001", "phantom_002"]
TINY_MODEL = {
    "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": 4, "depth": 2}},
    "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
    "segmentor": {"name": "conv_head", "params": {"filters": 8}},
    "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
}


def train_tiny(root: Path, run_dir: Path, seed: int) -> Path:
    from dafnet.config.resolve import parse_recipe, resolve
    from dafnet.engine import train

    recipe = resolve(parse_recipe({
        "name": "tiny", "data": {"source": {"name": "nnunet", "params": {"root": str(root), "image_size": 32}},
                                 "modalities": ["cine", "lge"], "target": "lge",
                                 "split": {"folds": 1, "train": 0.34, "validation": 0.33, "test": 0.33}},
        "model": TINY_MODEL,
        "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "swa_start": None, "seed": seed},
        "output": {"tensorboard": False, "figures": False}}))
    return train(recipe, run_dir=run_dir, console=Console(file=io.StringIO())).export_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(phantom raw folder, two tiny DAFNet exports trained on it with different seeds)."""
    base = tmp_path_factory.mktemp("ensemble")
    raw = base / "raw"
    with pytest.raises(SystemExit) as done:
        main(["data", "phantom", str(raw), "--subjects", "3", "--slices", "4", "--image-size", "32", "--seed", "4"])
    assert done.value.code in (0, None)
    return raw, train_tiny(raw, base / "run0", 0), train_tiny(raw, base / "run1", 1)


def predict(capsys, *args) -> str:
    code, out, err = run_cli(capsys, "predict", *args)
    assert code == 0, out + err
    return " ".join((out + err).split())


def read(out: Path, case: str):
    """(mask as nibabel reads it, probabilities (K, z, y, x), geometry)."""
    mask = np.asarray(nib.load(str(out / f"{case}.nii.gz")).dataobj)
    with np.load(out / f"{case}.npz") as npz:
        probabilities = npz["probabilities"]
    return mask, probabilities, json.loads((out / f"{case}.json").read_text())


# ---------------------------------------------------------------- --save-probabilities
def test_saved_probabilities_sum_to_one_and_their_argmax_is_the_mask(setup, tmp_path, capsys):
    raw, export, _ = setup
    predict(capsys, export, "--input", raw, "--out", tmp_path / "o", "--save-probabilities")
    for case in CASES:
        image = nib.load(str(raw / "imagesTr" / f"{case}_0001.nii.gz"))
        mask, probabilities, geometry = read(tmp_path / "o", case)
        x, y, z = image.shape
        assert probabilities.dtype == np.float32 and probabilities.shape == (4, z, y, x)
        np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
        np.testing.assert_array_equal(probabilities.argmax(axis=0).transpose(2, 1, 0), mask)
        assert geometry["shape"] == [4, z, y, x] and geometry["image_shape"] == [x, y, z]
        assert geometry["classes"] == ["background", "lv", "myocardium", "rv"] and geometry["mirror"] is False
        assert geometry["exports"] == [str(export)] and geometry["dtype"] == "float32"
        np.testing.assert_allclose(geometry["affine"], image.affine, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        f"{c}{suffix}" for c in CASES for suffix in (".nii.gz", "_overlay.png", ".npz", ".json"))


# ---------------------------------------------------------------- ensembles
def test_an_ensemble_of_one_export_twice_is_that_export(setup, tmp_path, capsys):
    raw, export, _ = setup
    predict(capsys, export, "--input", raw, "--out", tmp_path / "one", "--save-probabilities")
    text = predict(capsys, export, export, "--input", raw, "--out", tmp_path / "two", "--save-probabilities")
    assert "ensemble of 2 exports" in text
    for case in CASES:
        mask, probabilities, _ = read(tmp_path / "one", case)
        twice, twice_probabilities, geometry = read(tmp_path / "two", case)
        np.testing.assert_array_equal(twice, mask)
        np.testing.assert_allclose(twice_probabilities, probabilities, atol=1e-7)
        assert geometry["exports"] == [str(export)] * 2


def test_an_ensemble_of_two_exports_is_the_mean_of_their_probabilities(setup, tmp_path, capsys):
    raw, first, second = setup
    for name, export in (("a", first), ("b", second)):
        predict(capsys, export, "--input", raw, "--out", tmp_path / name, "--save-probabilities")
    predict(capsys, first, second, "--input", raw, "--out", tmp_path / "ab", "--save-probabilities")
    differ = False
    for case in CASES:
        _, a, _ = read(tmp_path / "a", case)
        _, b, _ = read(tmp_path / "b", case)
        mask, mean, _ = read(tmp_path / "ab", case)
        differ |= not np.allclose(a, b, atol=1e-3)
        np.testing.assert_allclose(mean, (a + b) / 2, atol=1e-6)
        np.testing.assert_array_equal(mask, mean.argmax(axis=0).transpose(2, 1, 0))
    assert differ  # the two exports really are two models


def edited(export: Path, to: Path, change) -> Path:
    shutil.copytree(export, to)
    index = json.loads((to / "dafnet_index.json").read_text())
    change(index)
    (to / "dafnet_index.json").write_text(json.dumps(index))
    return to


def test_exports_that_do_not_agree_are_refused(setup, tmp_path, capsys):
    raw, first, second = setup
    changes = {
        "target": ("its target sequence is 'cine', those of",
                   lambda i: i["recipe"]["data"].update(target="cine")),
        "classes": ("its classes are ['lv', 'myo', 'rv']",
                    lambda i: i["facts"].update(class_names=["lv", "myo", "rv"])),
        "label_map": ("its label map is", lambda i: i["recipe"]["data"]["source"]["params"].update(
            label_map={"*": {"0": 0, "1": 1, "2": 2, "3": 3}})),
    }
    for name, (message, change) in changes.items():
        other = edited(second, tmp_path / name, change)
        code, out, err = run_cli(capsys, "predict", first, other, "--input", raw, "--out", tmp_path / "o")
        text = " ".join((out + err).split())
        assert code == 2, text
        assert f"export {other} does not fit the ensemble" in text and message in text, text
        assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- test-time mirroring
def test_mirrored_averages_the_flips_of_every_input_and_undoes_them():
    """A position-dependent (not flip-equivariant) prediction: the mirrored one is the mean of
    the four flipped predictions, each flipped back; both inputs are flipped alike."""
    ramp = torch.arange(6.0).view(1, 1, 1, 6) + 10 * torch.arange(5.0).view(1, 1, 5, 1)
    seen = []

    def predict(images):
        seen.append(torch.equal(images["a"], -images["b"]))
        return torch.cat([images["a"] + ramp, images["b"] * ramp], dim=1)

    a = torch.randn(2, 1, 5, 6)
    images = {"a": a, "b": -a}
    expected = sum(predict({k: x.flip(ax) for k, x in images.items()}).flip(ax) if ax
                   else predict(images) for ax in MIRROR_AXES) / 4
    seen.clear()
    got = mirrored(predict)(images)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert all(seen) and len(seen) == 4
    assert not torch.allclose(got, predict(images))


class Stub:
    """A flip-equivariant stand-in for the method: a 3x3 mean of the target and of the other
    sequence (replicate padding), then pixelwise; ``shift`` rolls the target first (not
    equivariant). Counts its windows."""

    def __init__(self, modalities, shift: int = 0):
        self.modalities, self.shift, self.windows = tuple(modalities), shift, 0

    def predict(self, images, target):
        self.windows += images[target].shape[0]
        blur = lambda x: F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # noqa: E731
        t = blur(torch.roll(images[target], self.shift, dims=-1))
        o = blur(next((x for m, x in images.items() if m != target), images[target]))
        p = torch.softmax(torch.cat([torch.zeros_like(t), 4 * t, 3 * o, t * o - 2], dim=1), dim=1)
        return {"fused": p, "single": p}


def write_l_shape(root: Path, size: int = 64) -> dict[str, Path]:
    """One case, cine and lge, with a bright L in one corner (no symmetry of any flip)."""
    (root / "imagesTs").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "cine", "1": "lge"},
        "labels": {"background": 0, "lv": 1, "myocardium": 2, "rv": 3}, "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(7)
    files = {}
    for channel, name in enumerate(("cine", "lge")):
        data = rng.normal(20.0, 3.0, size=(size, size, 2)).astype(np.float32)
        data[6:22, 6:10] += 100.0
        data[18:22, 6:30] += 100.0
        files[name] = root / "imagesTs" / f"case_{channel:04d}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), str(files[name]))
    return files


def test_mirroring_an_equivariant_model_changes_nothing_and_the_flips_are_undone(setup, tmp_path):
    _, export, _ = setup
    files = write_l_shape(tmp_path / "ds")
    results = {}
    for mirror in (False, True):
        predictor = Predictor(export, mirror=mirror)
        predictor.preprocessing["spacing_mm"] = None  # the input's grid: 64 px, 9 windows of 32
        predictor.method = Stub(predictor.modalities)
        results[mirror] = predictor.case_probabilities("case", files)
        assert predictor.method.windows == 2 * 9 * (4 if mirror else 1)
    np.testing.assert_allclose(results[True].probabilities, results[False].probabilities, atol=1e-5)
    mask = results[True].probabilities.argmax(axis=0)
    assert (mask[7:21, 7:9] == 1).all() and (mask[19:21, 7:29] == 1).all()  # the L, where it is
    assert mask[40:].max() == 0 and mask[:, 40:].max() == 0  # not its mirror images
    shifted = {}
    for mirror in (False, True):
        predictor = Predictor(export, mirror=mirror)
        predictor.preprocessing["spacing_mm"] = None
        predictor.method = Stub(predictor.modalities, shift=3)
        shifted[mirror] = predictor.case_probabilities("case", files).probabilities
    assert not np.allclose(shifted[True], shifted[False], atol=1e-3)  # mirroring is on: a shift is not equivariant


def test_mirror_from_the_command_line(setup, tmp_path, capsys):
    raw, first, second = setup
    text = predict(capsys, first, second, "--input", raw / "phantom_001", "--out", tmp_path / "o",
                   "--mirror", "--save-probabilities")
    assert "ensemble of 2 exports, mirrored" in text
    mask, probabilities, geometry = read(tmp_path / "o", "phantom_001")
    assert geometry["mirror"] is True
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=0).transpose(2, 1, 0), mask)
    ensemble = Ensemble([first, second], mirror=True)
    assert ensemble.mirror and all(m.mirror for m in ensemble.members)
