"""``dafnet predict``: a tiny DAFNet trained on the phantom written to disk (and on real MR from
open_ms) segments NIfTI cases; masks land on each target file's original grid; bad input fails
cleanly with exit 2 and writes nothing; a run that fails halfway leaves --out as it was."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _cli import run_cli
from rich.console import Console

from dafnet.cli import main
from dafnet.data.nnunet_writer import nifti_to_volume
from dafnet.data.phantom import PhantomDataSource
from dafnet.errors import DafnetError
from dafnet.inference.predictor import Predictor, shifted

OPEN_MS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "open_ms"
MNI = "cross_sectional/MNI/{}/{}_N4_noneck_reduced_winsor_regtoFLAIR{}_regtoMNI.nii.gz"
PHANTOM = {"subjects": 3, "slices": 4, "image_size": 32, "seed": 3}
TINY_MODEL = {
    "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": 4, "depth": 2}},
    "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
    "segmentor": {"name": "conv_head", "params": {"filters": 8}},
    "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
}


def run(capsys, *args) -> tuple[int, str]:
    code, out, err = run_cli(capsys, *args)
    return code, out + err


def train_tiny(root: Path, run_dir: Path, source_params: dict, modalities, target,
               split=(0.34, 0.33, 0.33)) -> Path:
    from dafnet.config.resolve import parse_recipe, resolve
    from dafnet.engine import train

    recipe = resolve(parse_recipe({
        "name": "tiny", "data": {"source": {"name": "nnunet", "params": {"root": str(root), **source_params}},
                                 "modalities": list(modalities), "target": target,
                                 "split": {"folds": 1, **dict(zip(("train", "validation", "test"), split))}},
        "model": TINY_MODEL,
        "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "swa_start": None},
        "output": {"tensorboard": False, "figures": False}}))
    return train(recipe, run_dir=run_dir, console=Console(file=io.StringIO())).export_dir


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """(raw folder written by `dafnet data phantom`, export of a tiny DAFNet trained on it)."""
    base = tmp_path_factory.mktemp("predict_phantom")
    raw = base / "raw"
    with pytest.raises(SystemExit) as done:
        main(["data", "phantom", str(raw), "--subjects", "3", "--slices", "4", "--image-size", "32", "--seed", "3"])
    assert done.value.code in (0, None)
    export = train_tiny(raw, base / "run", {"image_size": 32, "spacing_mm": None,  # inputs keep their grid
                                            "intensity": {"clip_percentiles": None}},
                        ["cine", "lge"], "lge")
    return raw, export


def check_masks(out: Path, raw: Path, cases, channel: str, num_classes: int) -> None:
    for case in cases:
        image = nib.load(str(raw / "imagesTr" / f"{case}_{channel}.nii.gz"))
        mask = nib.load(str(out / f"{case}.nii.gz"))
        assert mask.shape == image.shape[:3]
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)
        data = np.asarray(mask.dataobj)
        assert mask.get_data_dtype() == np.uint8 and data.min() >= 0 and data.max() <= num_classes
        png = out / f"{case}_overlay.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


# ---------------------------------------------------------------- the phantom written to disk
def test_predict_a_folder_writes_masks_on_the_input_grid(phantom, tmp_path, capsys):
    raw, export = phantom
    code, out = run(capsys, "predict", export.parent, "--input", raw, "--out", tmp_path / "pred")
    assert code == 0, out
    cases = ["phantom_000", "phantom_001", "phantom_002"]
    check_masks(tmp_path / "pred", raw, cases, "0001", 3)
    for case in cases:
        assert case in out
    assert "fused (lge+cine)" in out and "myocardium" in out and "seconds" in out


def test_in_memory_and_from_disk_predictions_agree(phantom, tmp_path):
    raw, export = phantom
    predictor, single_predictor = Predictor(export, mode="fused"), Predictor(export, mode="single")
    subjects = PhantomDataSource(PhantomDataSource.Params(**PHANTOM)).load()
    out = tmp_path / "pred"
    out.mkdir()
    for subject in subjects:
        in_memory, kind = predictor.predict_volumes(subject.volumes)
        assert kind == "fused" and in_memory.shape == subject.volumes["lge"].image.shape
        files = {m: raw / "imagesTr" / f"{subject.id}_{i:04d}.nii.gz" for i, m in enumerate(("cine", "lge"))}
        result = predictor.predict_case(subject.id, files, out)
        np.testing.assert_array_equal(result.prediction, in_memory)
        on_disk, _ = nifti_to_volume(nib.load(str(result.mask_path)))
        np.testing.assert_array_equal(on_disk, in_memory)  # the phantom's grid is the network grid
        single, kind = single_predictor.predict_volumes(subject.volumes)
        assert kind == "single"
        alone, kind = predictor.predict_volumes({"lge": subject.volumes["lge"]})
        assert kind == "single"
        np.testing.assert_array_equal(alone, single)


def test_a_missing_sequence_falls_back_to_single(phantom, tmp_path, capsys):
    raw, export = phantom
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    (copy / "imagesTr" / "phantom_001_0000.nii.gz").unlink()
    code, out = run(capsys, "predict", export, "--input", copy, "--out", tmp_path / "pred")
    assert code == 0, out
    assert "single (lge)" in out and "fused (lge+cine)" in out


@pytest.mark.parametrize("form", ["case_prefix", "images_folder", "one_file", "imagesTs"])
def test_input_forms(phantom, tmp_path, capsys, form):
    raw, export = phantom
    if form == "case_prefix":
        given, expected = raw / "phantom_001", ["phantom_001"]
    elif form == "images_folder":
        given, expected = raw / "imagesTr", ["phantom_000", "phantom_001", "phantom_002"]
    elif form == "one_file":
        given, expected = raw / "imagesTr" / "phantom_002_0000.nii.gz", ["phantom_002"]
    else:  # a test folder beside imagesTr wins
        given = tmp_path / "ds"
        (given / "imagesTs").mkdir(parents=True)
        shutil.copy(raw / "dataset.json", given)
        for f in ("phantom_002_0000.nii.gz", "phantom_002_0001.nii.gz"):
            shutil.copy(raw / "imagesTr" / f, given / "imagesTs" / f)
        shutil.copytree(raw / "imagesTr", given / "imagesTr")
        expected = ["phantom_002"]
    code, out = run(capsys, "predict", export, "--input", given, "--out", tmp_path / "pred")
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in expected]


# ---------------------------------------------------------------- the whole field of view: sliding windows
class LocalStub:
    """A stand-in for the method whose probabilities are a deterministic function of local content
    (a 3x3 mean of the target and of the other sequence, then pixelwise): every window predicts a
    pixel the same way unless the pixel is at the window's edge. Records the windows it is given."""

    def __init__(self, modalities):
        self.modalities, self.calls = tuple(modalities), []

    def predict(self, images, target):
        import torch
        import torch.nn.functional as F

        self.calls.append({m: tuple(x.shape) for m, x in images.items()})
        blur = lambda x: F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # noqa: E731
        t = blur(images[target])
        o = blur(next((x for m, x in images.items() if m != target), images[target]))
        p = torch.softmax(torch.cat([torch.zeros_like(t), 4 * t, 3 * o, t * o - 2], dim=1), dim=1)
        return {"fused": p, "single": p}


def write_case(root: Path, sizes: dict[str, int], square: slice, slices: int = 2) -> None:
    """An nnU-Net folder with one case: cine (channel 0) and lge (1), each n x n x slices at 1 x 1 x 3 mm,
    noise plus a bright square at ``square`` in the first two array axes of the largest image, put at
    the same offset from the field of view's centre in each (as the training crops pair them)."""
    (root / "imagesTs").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "cine", "1": "lge"},
        "labels": {"background": 0, "lv": 1, "myocardium": 2, "rv": 3}, "file_ending": ".nii.gz"}))
    largest = max(sizes.values())
    rng = np.random.default_rng(5)
    for channel, name in enumerate(("cine", "lge")):
        n = sizes[name]
        shift = (largest - n) // 2
        data = rng.normal(0.0, 3.0, size=(n, n, slices)).astype(np.float32) + 20.0
        inside = slice(square.start - shift, square.stop - shift)
        data[inside, inside] += 100.0
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])),
                 str(root / "imagesTs" / f"case_{channel:04d}.nii.gz"))


def load_whole(predictor: Predictor, root: Path):
    """The case's volumes over their whole field of view, and where the training crop lies in each."""
    from dafnet.data.staging import StagedCase, StagedNnUNet

    files = {m: root / "imagesTs" / f"case_{i:04d}.nii.gz" for i, m in enumerate(("cine", "lge"))}
    with StagedNnUNet({"case": StagedCase(files, {})}, ["cine", "lge"], predictor.class_names,
                      predictor.preprocessing) as staged:
        volumes = staged.load(field_of_view=True)[0].volumes
        return volumes, {m: staged.records[("case", m)].window for m in files}


@pytest.mark.parametrize("size", [64, 96])
def test_every_pixel_is_predicted_and_an_off_centre_structure_is_found(phantom, tmp_path, size):
    """Inputs 2x and 3x the 32 px crop with a structure in a corner, outside the centred crop:
    (a) every pixel gets probabilities summing to 1 and the structure is segmented on the input
    grid, (b) its prediction equals that of a crop centred on it."""
    _, export = phantom
    root = tmp_path / "ds"
    write_case(root, {"cine": size, "lge": size}, slice(4, 12))
    predictor = Predictor(export, mode="fused")
    predictor.method = LocalStub(predictor.modalities)
    volumes, windows = load_whole(predictor, root)
    assert volumes["lge"].image.shape[1:] == (size, size) and windows["lge"] == (size // 2 - 16,) * 2
    probabilities, kind = predictor.predict_probabilities(volumes, windows)
    assert kind == "fused" and probabilities.shape == (2, 4, size, size)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)  # (a) every pixel
    assert all(c == {"lge": (c["lge"][0], 1, 32, 32), "cine": (c["lge"][0], 1, 32, 32)}
               for c in predictor.method.calls)
    # (b) the crop centred on the structure, cut from both sequences, predicts it the same way
    rows, cols = np.nonzero(volumes["lge"].image[0] > 0)
    centre = (int(round(rows.mean())), int(round(cols.mean())))
    assert min(abs(c - size / 2) for c in centre) > 16  # outside the centred 32 px training crop
    start = tuple(c - 16 for c in centre)
    crops = {m: replace_image(v, shifted(v.image, start, (32, 32))) for m, v in volumes.items()}
    alone, _ = predictor.predict_probabilities(crops)
    inside = np.s_[:, :, rows.min() - start[0]:rows.max() + 1 - start[0],
                   cols.min() - start[1]:cols.max() + 1 - start[1]]
    whole = probabilities[:, :, start[0]:start[0] + 32, start[1]:start[1] + 32]
    np.testing.assert_allclose(whole[inside], alone[inside], atol=2e-3)
    assert (alone[inside][:, :, 1:-1, 1:-1].argmax(axis=1) == 1).all()  # the square's corners are blurred
    # on the input grid: the square is class 1, the rest background
    (tmp_path / "out").mkdir()
    result = predictor.predict_case("case", {m: root / "imagesTs" / f"case_{i:04d}.nii.gz"
                                             for i, m in enumerate(("cine", "lge"))}, tmp_path / "out")
    mask = np.asarray(nib.load(str(result.mask_path)).dataobj)
    assert mask.shape == (size, size, 2) and result.windows == {64: 9, 96: 25}[size]
    assert (mask[5:11, 5:11] == 1).all() and mask.max() == 1 and mask[3:13, 3:13].sum() == mask.sum()


def test_other_sequences_are_cut_at_the_training_crops_relative_position(phantom, tmp_path):
    """cine has a smaller field of view than lge (80 vs 96 px): the training crops pair their
    centres, so the window of cine is cut 8 px off lge's; the fused prediction at the structure
    is what the centred crops give."""
    _, export = phantom
    root = tmp_path / "ds"
    write_case(root, {"cine": 80, "lge": 96}, slice(12, 20))
    predictor = Predictor(export, mode="fused")
    predictor.method = LocalStub(predictor.modalities)
    volumes, windows = load_whole(predictor, root)
    assert windows == {"lge": (32, 32), "cine": (24, 24)}
    probabilities, _ = predictor.predict_probabilities(volumes, windows)
    rows, cols = np.nonzero(volumes["lge"].image[0] > 0)
    start = (int(rows.mean()) - 16, int(cols.mean()) - 16)
    crops = {"lge": replace_image(volumes["lge"], shifted(volumes["lge"].image, start, (32, 32))),
             "cine": replace_image(volumes["cine"], shifted(volumes["cine"].image,
                                                            (start[0] - 8, start[1] - 8), (32, 32)))}
    alone, _ = predictor.predict_probabilities(crops)
    inside = np.s_[:, :, rows.min() - start[0]:rows.max() + 1 - start[0],
                   cols.min() - start[1]:cols.max() + 1 - start[1]]
    whole = probabilities[:, :, start[0]:start[0] + 32, start[1]:start[1] + 32]
    np.testing.assert_allclose(whole[inside], alone[inside], atol=2e-3)
    assert (alone[inside][:, :, 1:-1, 1:-1].argmax(axis=1) == 1).all()


def test_an_input_smaller_than_the_crop_is_padded_and_cropped_back(phantom, tmp_path):
    """A 24 px field of view inside the 32 px crop: one window (padded with -1 as in training), the
    mask on the 24 px input grid."""
    _, export = phantom
    root = tmp_path / "ds"
    write_case(root, {"cine": 24, "lge": 24}, slice(2, 8))
    predictor = Predictor(export, mode="fused")
    predictor.method = LocalStub(predictor.modalities)
    volumes, windows = load_whole(predictor, root)
    assert volumes["lge"].image.shape[1:] == (32, 32) and windows["lge"] == (0, 0)
    assert (volumes["lge"].image[:, :4] == -1).all()  # the padding
    (tmp_path / "out").mkdir()
    result = predictor.predict_case("case", {m: root / "imagesTs" / f"case_{i:04d}.nii.gz"
                                             for i, m in enumerate(("cine", "lge"))}, tmp_path / "out")
    mask = np.asarray(nib.load(str(result.mask_path)).dataobj)
    assert result.windows == 1 and len(predictor.method.calls) == 1 and mask.shape == (24, 24, 2)
    assert (mask[3:7, 3:7] == 1).all() and mask[1:9, 1:9].sum() == mask.sum()


def replace_image(volume, image):
    from dataclasses import replace

    return replace(volume, image=image)


def test_an_input_of_the_crop_size_predicts_as_one_window(phantom):
    """(c) phantom slices are the 32 px crop: one window, the method's own argmax (as before)."""
    import torch

    _, export = phantom
    subjects = PhantomDataSource(PhantomDataSource.Params(**PHANTOM)).load()
    for mode in ("fused", "single"):
        predictor = Predictor(export, mode=mode, batch_size=3)
        for subject in subjects:
            v = subject.volumes
            images = {m: torch.from_numpy(v[m].image).unsqueeze(1) for m in (("lge", "cine") if mode == "fused"
                                                                              else ("lge",))}
            before = predictor.method.predict(images, "lge")[mode].argmax(dim=1).numpy()
            now, kind = predictor.predict_volumes(v)
            assert kind == mode
            np.testing.assert_array_equal(now, before)
        assert predictor.window_count((32, 32)) == 1


def test_a_trained_export_covers_a_field_of_view_three_times_its_crop(phantom, tmp_path, capsys):
    _, export = phantom
    root = tmp_path / "ds"
    write_case(root, {"cine": 96, "lge": 96}, slice(4, 12))
    predictor = Predictor(export, mode="fused", overlap=0.25)
    volumes, windows = load_whole(predictor, root)
    probabilities, _ = predictor.predict_probabilities(volumes, windows)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    code, out = run(capsys, "predict", export, "--input", root, "--out", tmp_path / "pred", "--overlap", "0.25")
    assert code == 0, out
    assert nib.load(str(tmp_path / "pred" / "case.nii.gz")).shape == (96, 96, 2)
    assert "windows" in out and predictor.window_count((96, 96)) == 16
    expect_error(capsys, ["predict", export, "--input", root, "--out", tmp_path / "o", "--overlap", "1"],
                 "--overlap must be in [0, 1), got 1.0", tmp_path / "o")


# ---------------------------------------------------------------- errors: exit 2, nothing written
def expect_error(capsys, args, pattern: str, out_dir: Path) -> None:
    code, out = run(capsys, *args)
    assert code == 2, out
    assert pattern in " ".join(out.split()), out
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_missing_export(phantom, tmp_path, capsys):
    raw, _ = phantom
    expect_error(capsys, ["predict", tmp_path / "no_run", "--input", raw, "--out", tmp_path / "o"],
                 "no export at", tmp_path / "o")


def test_input_not_found(phantom, tmp_path, capsys):
    _, export = phantom
    expect_error(capsys, ["predict", export, "--input", tmp_path / "nowhere" / "x", "--out", tmp_path / "o"],
                 "does not exist", tmp_path / "o")
    raw, _ = phantom
    expect_error(capsys, ["predict", export, "--input", raw / "phantom_999", "--out", tmp_path / "o"],
                 "input not found: no image phantom_999_XXXX", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    expect_error(capsys, ["predict", export, "--input", tmp_path / "empty", "--out", tmp_path / "o"],
                 "is not an nnU-Net raw folder", tmp_path / "o")


def test_a_relative_input_that_does_not_exist(phantom, tmp_path, capsys, monkeypatch):
    _, export = phantom
    monkeypatch.chdir(tmp_path)
    expect_error(capsys, ["predict", export, "--input", "nowhere", "--out", tmp_path / "o"],
                 "input nowhere does not exist", tmp_path / "o")


def test_an_unusable_device_is_named(phantom, tmp_path, capsys, monkeypatch):
    raw, export = phantom
    args = ["predict", export, "--input", raw, "--out", tmp_path / "o", "--device"]
    expect_error(capsys, [*args, "banana"], "--device 'banana' is not a device name", tmp_path / "o")
    expect_error(capsys, [*args, "meta"], "--device 'meta': predict runs on cpu, cuda or mps", tmp_path / "o")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    expect_error(capsys, [*args, "cuda"], "--device 'cuda': CUDA is not available here", tmp_path / "o")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    code, out = run(capsys, *args, "cuda:3")
    assert code == 2 and "this machine has 1 CUDA device(s)" in out and "safetensors" not in out, out


def test_out_inside_the_input_dataset_is_refused(phantom, tmp_path, capsys):
    raw, export = phantom
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    for given, out in [(copy, copy / "imagesTr"), (copy, copy / "imagesTr" / "pred"), (copy, copy / "labelsTr"),
                       (copy, copy), (copy / "imagesTr", copy / "imagesTr"), (copy / "phantom_001", copy / "labelsTr")]:
        code, text = run(capsys, "predict", export, "--input", given, "--out", out)
        assert code == 2 and "--out" in text and "choose a folder outside" in " ".join(text.split()), text
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
    code, text = run(capsys, "predict", export, "--input", copy / "imagesTr", "--out", copy / "predictions")
    assert code == 0, text  # a folder of its own beside the dataset's folders is fine
    code, text = run(capsys, "predict", export, "--input", copy, "--out", tmp_path / "again")
    assert code == 0, text


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_failed_run_leaves_out_as_it_was(phantom, tmp_path, capsys):
    """Cases 000 and 001 predict, 002's voxel data is truncated: nothing reaches --out, no
    staging folder or created parent is left, and files already in --out stay."""
    raw, export = phantom
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    truncate(copy / "imagesTr" / "phantom_002_0001.nii.gz")
    for out in (tmp_path / "new" / "deep" / "o", tmp_path / "o"):
        code, text = run(capsys, "predict", export, "--input", copy, "--out", out)
        assert code == 2 and "phantom_002_0001.nii.gz" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    code, text = run(capsys, "predict", export, "--input", copy, "--out", keep)
    assert code == 2, text
    assert [p.name for p in keep.iterdir()] == ["mine.txt"]


def test_existing_masks_are_replaced_only_with_overwrite(phantom, tmp_path, capsys):
    raw, export = phantom
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    code, text = run(capsys, "predict", export, "--input", raw / "phantom_001", "--out", out)
    assert code == 0, text
    stamp = (out / "phantom_001.nii.gz").stat().st_mtime_ns
    code, text = run(capsys, "predict", export, "--input", raw, "--out", out)
    assert code == 2 and "already holds 2 file(s)" in text and "--overwrite" in text, text
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "phantom_001.nii.gz", "phantom_001_overlay.png"]
    assert (out / "phantom_001.nii.gz").stat().st_mtime_ns == stamp
    code, text = run(capsys, "predict", export, "--input", raw, "--out", out, "--overwrite")
    assert code == 0 and "replaced 2 existing file(s)" in " ".join(text.split()), text
    check_masks(out, raw, ["phantom_000", "phantom_001", "phantom_002"], "0001", 3)
    assert (out / "mine.txt").read_text() == "x"


def test_no_case_of_the_target(phantom, tmp_path, capsys):
    raw, export = phantom
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    for f in (copy / "imagesTr").glob("*_0001.nii.gz"):
        f.unlink()
    expect_error(capsys, ["predict", export, "--input", copy, "--out", tmp_path / "o"],
                 "has an image of the target sequence 'lge'", tmp_path / "o")


def test_unwritable_output(phantom, tmp_path, capsys):
    raw, export = phantom
    blocker = tmp_path / "file"
    blocker.write_text("x")
    expect_error(capsys, ["predict", export, "--input", raw, "--out", blocker],
                 "exists and is not a folder", tmp_path / "nothing")
    expect_error(capsys, ["predict", export, "--input", raw, "--out", blocker / "sub"],
                 "cannot write to output folder", tmp_path / "nothing")


def test_a_full_disk_while_writing_exits_2_and_leaves_no_staging_folder(phantom, tmp_path, capsys, monkeypatch):
    raw, export = phantom
    real, calls = nib.save, []

    def full(image, filename):
        calls.append(filename)
        if len(calls) % 2 == 0:  # the second mask of each run: half written, then the disk is full
            Path(filename).write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(image, filename)

    monkeypatch.setattr(nib, "save", full)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    for out in (tmp_path / "new", keep):
        code, text = run(capsys, "predict", export, "--input", raw, "--out", out)
        flat = " ".join(text.split())
        assert code == 2 and f"cannot write the predictions to {out}: No space left on device" in flat, text
        assert "run the same dafnet predict again" in flat and "Traceback" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    assert [p.name for p in keep.iterdir()] == ["mine.txt"]


def test_the_next_predict_removes_staging_folders_of_killed_ones(phantom, tmp_path, capsys):
    from test_write_failures import dead_pid, staged_by

    raw, export = phantom
    out = tmp_path / "o"
    out.mkdir()
    killed = staged_by(out / "dafnet-predict", dead_pid())
    killed_beside = staged_by(out, dead_pid())  # made while --out did not exist yet
    running = staged_by(out / "dafnet-predict", os.getppid())  # a predict into the same --out that still runs
    code, text = run(capsys, "predict", export, "--input", raw / "phantom_001", "--out", out)
    assert code == 0, text
    assert not killed.exists() and not killed_beside.exists() and running.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_sequences_unknown_to_the_export(phantom, tmp_path, capsys):
    raw, export = phantom
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    info = json.loads((copy / "dataset.json").read_text())
    info["channel_names"]["2"] = "T2"
    (copy / "dataset.json").write_text(json.dumps(info))
    shutil.copy(copy / "imagesTr" / "phantom_000_0000.nii.gz", copy / "imagesTr" / "phantom_000_0002.nii.gz")
    expect_error(capsys, ["predict", export, "--input", copy, "--out", tmp_path / "o"],
                 "input sequences ['t2']", tmp_path / "o")
    code, out = run(capsys, "predict", export, "--input", copy, "--out", tmp_path / "o", "--ignore-unknown")
    assert code == 0, out
    expect_error(capsys, ["predict", export, "--input", raw, "--out", tmp_path / "o2", "--target", "t2"],
                 "--target 't2' is not a sequence of the export", tmp_path / "o2")
    expect_error(capsys, ["predict", export, "--input", raw, "--out", tmp_path / "o2", "--mode", "mean"],
                 "unknown --mode 'mean'", tmp_path / "o2")


def test_a_corrupt_case_stops_before_anything_is_written(phantom, tmp_path):
    raw, export = phantom
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    (copy / "imagesTr" / "phantom_002_0000.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DafnetError, match="phantom_002_0000.nii.gz"):
        main(["--debug", "predict", str(export), "--input", str(copy), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---------------------------------------------------------------- real MR: open_ms (Lesjak et al.)
@pytest.mark.filterwarnings("ignore:.*constant slice")
def test_open_ms_train_tiny_and_predict_on_original_grids(tmp_path, capsys):
    """An MNI case (FLAIR, T1, T2 on one 1 mm grid, lesion label) trains a tiny model at 32 px; it
    predicts the raw longitudinal patient01 (FLAIR, T1, T2 on their own scanner grids, LPS)."""
    if not OPEN_MS.is_dir():
        pytest.skip(f"{OPEN_MS} is not available")
    channels = {"0": "FLAIR", "1": "T1", "2": "T2"}
    train_root, test_root = tmp_path / "train", tmp_path / "test"
    for root in (train_root, test_root):
        (root / "imagesTr").mkdir(parents=True)
        (root / "dataset.json").write_text(json.dumps({
            "channel_names": channels, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}))
    (train_root / "labelsTr").mkdir()
    for i, name in channels.items():
        (train_root / "imagesTr" / f"ms07_{int(i):04d}.nii.gz").symlink_to(
            OPEN_MS / MNI.format("patient07", name, "_brain_N4"))
    (train_root / "labelsTr" / "ms07.nii.gz").symlink_to(OPEN_MS / MNI.format("patient07", "GOLD_STANDARD", ""))
    for i, name in [(0, "FLAIR"), (1, "T1W"), (2, "T2W")]:
        (test_root / "imagesTr" / f"long01_{i:04d}.nii.gz").symlink_to(
            OPEN_MS / f"longitudinal/raw/patient01/study1_{name}.nii.gz")
    export = train_tiny(train_root, tmp_path / "run", {"image_size": 32, "spacing_mm": 7.0},
                        ["t1", "t2", "flair"], "flair", split=(1.0, 0.0, 0.0))
    code, out = run(capsys, "predict", export, "--input", test_root, "--out", tmp_path / "pred")
    assert code == 0, out
    assert "fused (flair+t1+t2)" in out
    check_masks(tmp_path / "pred", test_root, ["long01"], "0000", 1)
    assert nib.load(str(tmp_path / "pred" / "long01.nii.gz")).shape == (320, 320, 36)
