"""Baseline methods: unet (single / multi / trained on the source), sdnet, copy and register."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dafnet.assemble import assemble
from dafnet.components.anatomy import UNetSharedDecoderEncoder
from dafnet.components.keras_layers import KERAS_BN_EPS, KERAS_BN_MOMENTUM, count_trainable
from dafnet.config.resolve import parse_recipe, resolve
from dafnet.data.phantom import PhantomDataSource
from dafnet.engine import load_export, train
from dafnet.errors import DafnetError
from dafnet.interfaces import MetricInputs
from dafnet.metrics.dice import paper_dice_per_slice
from dafnet.registry import registry

torch.set_num_threads(1)

TINY_MODEL = {
    "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": 4, "depth": 2}},
    "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
    "segmentor": {"name": "conv_head", "params": {"filters": 8}},
    "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
}


def tiny(method: str, params: dict | None = None, fraction: float = 0.5, model: dict | None = None):
    data = {"name": "tiny", "method": {"name": method, "params": params or {}},
            "data": {"source": {"name": "phantom", "params": {"subjects": 6, "slices": 3, "image_size": 32}},
                     "annotation_fraction": fraction,
                     "split": {"folds": 3, "validation": 0.25}},
            "train": {"epochs": 1, "batch_size": 2, "iterations_per_epoch": 2, "swa_start": None},
            "output": {"tensorboard": False, "figures": False}}
    if model:
        data["model"] = model
    return resolve(parse_recipe(data))


UNET = {"base_filters": 4, "depth": 2}


# --------------------------------------------------------------------------- unet
@pytest.mark.parametrize("mode", ["single", "multi"])
def test_unet_trains_and_evaluates(tmp_path, mode):
    result = train(tiny("unet", {**UNET, "mode": mode}), run_dir=tmp_path / "run")
    s = result.summary
    assert {"dice_single", "dice_single_std", "dice3d_single", "monitor"} <= set(s)
    assert not any(k.startswith(("dice_fused", "dice_deformed")) for k in s)
    assert 0 <= s["dice_single"] <= 100 and s["monitor"] == pytest.approx(1 - s["dice_single"] / 100)
    method = load_export(result.export_dir)
    table = method.result_table(s)
    assert table is not None and table.rows[0][0] == "single"
    trained_on = {"single": ("lge",), "multi": ("cine", "lge")}[mode]
    assert method.train_modalities == trained_on
    batch = next(iter(torch.utils.data.DataLoader(method.eval_dataset(_subjects()), batch_size=3,
                                                  collate_fn=method.collate)))
    inputs = method.evaluation_inputs(batch)
    assert inputs and all(isinstance(i, MetricInputs) and i.prediction_type == "single" for i in inputs)
    assert torch.allclose(inputs[0].prediction.sum(1), torch.ones(1))


def _subjects():
    return PhantomDataSource(PhantomDataSource.Params(subjects=2, slices=3, image_size=32)).load()


def test_unet_multi_mixes_modalities_and_hides_unannotated_target_masks():
    recipe = tiny("unet", {**UNET, "mode": "multi"}, fraction=0.34)
    _, _, method = assemble(recipe)
    subjects = PhantomDataSource(PhantomDataSource.Params(subjects=6, slices=3, image_size=32)).load()
    labelled = method.train_streams(subjects)["labelled"]
    per_modality = [len(d) for d in labelled.datasets]
    assert per_modality == [6 * 3, 2 * 3]  # every cine slice; the lge slices of round(0.34 * 6) = 2 subjects
    sample = labelled[0]
    assert sample["images"].shape == (1, 1, 1, 32, 32) and bool(sample["labelled"].all())


def test_unet_single_without_target_labels_is_a_clear_error_and_train_on_source_works(tmp_path):
    with pytest.raises(DafnetError, match="no annotated slices"):
        train(tiny("unet", {**UNET, "mode": "single"}, fraction=0.0), run_dir=tmp_path / "a")
    result = train(tiny("unet", {**UNET, "mode": "single", "train_on": "cine"}, fraction=0.0),
                   run_dir=tmp_path / "b")
    assert np.isfinite(result.summary["dice_single"])
    with pytest.raises(DafnetError, match="train_on"):
        assemble(tiny("unet", {**UNET, "mode": "multi", "train_on": "cine"}))


def test_unet_reuses_the_anatomy_encoder_blocks():
    _, facts, method = assemble(tiny("unet", {"base_filters": 8, "depth": 3}))
    norms = [m for m in method.unet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(n.eps == KERAS_BN_EPS and n.momentum == KERAS_BN_MOMENTUM for n in norms)
    # same layout as the anatomy encoder of one modality with L + 1 output channels
    encoder = UNetSharedDecoderEncoder(UNetSharedDecoderEncoder.Params(channels=4, base_filters=8, depth=3),
                                       facts.with_(modalities=("lge",)))
    assert count_trainable(method.unet) == count_trainable(encoder)
    logits = method.unet(torch.zeros(2, 1, 32, 32))
    assert logits.shape == (2, 4, 32, 32)


# --------------------------------------------------------------------------- sdnet
@pytest.mark.parametrize("mode", ["single", "multi"])
def test_sdnet_trains(tmp_path, mode):
    result = train(tiny("sdnet", {"mode": mode}, model=TINY_MODEL), run_dir=tmp_path / "run")
    assert np.isfinite(result.summary["dice_single"]) and "dice_fused" not in result.summary
    terms = {k.split("/")[-1] for k in result.history[-1] if k.startswith("labelled/generator/")}
    assert terms == {"total", "sup", "adv_mask", "rec", "kl", "z_rec"}  # no image critic, no cross pairs
    method = load_export(result.export_dir)
    assert set(method.networks()) == {"anatomy_encoder", "modality_encoder", "segmentor", "decoder",
                                      "mask_discriminator"}
    assert len(method.anatomy_encoder.contracting) == 1  # one input stream, also in multi mode


def test_sdnet_needs_annotated_slices(tmp_path):
    with pytest.raises(DafnetError, match="no annotated slices"):
        train(tiny("sdnet", {"mode": "single"}, fraction=0.0, model=TINY_MODEL), run_dir=tmp_path / "run")


# --------------------------------------------------------------------------- copy / register
def test_engine_exports_and_evaluates_training_free_methods(tmp_path):
    from dafnet.engine import load_export

    result = train(tiny("copy"), run_dir=tmp_path / "run")
    assert result.epochs_run == 0 and result.evaluated_on == "test"
    assert 0.0 <= result.summary["dice_single"] <= 100.0
    assert (result.export_dir / "dafnet_index.json").exists()
    assert type(load_export(result.export_dir)).__name__ == type(assemble(tiny("copy"))[2]).__name__


def test_copy_predicts_the_paired_source_mask():
    recipe = tiny("copy")
    _, _, method = assemble(recipe)
    assert registry("method").get("copy") is type(method) and method.source == "cine"
    subjects = _subjects()
    batch = next(iter(torch.utils.data.DataLoader(method.eval_dataset(subjects), batch_size=6)))
    prediction = method.predictions(batch)["single"]
    source_masks = batch["masks"][:, 0, 0]
    assert torch.equal(prediction.argmax(1), source_masks)
    stats = method.evaluation_step(batch)
    expected = paper_dice_per_slice(prediction, batch["masks"][:, 1, 0])
    assert torch.allclose(stats["paper_single"], expected)
    summary = method.evaluation_summary(stats)
    assert 0 < summary["dice_single"] < 100  # the phantom's stacks are misaligned


def _misaligned_pair(shift: int = 4):
    subject = PhantomDataSource(PhantomDataSource.Params(subjects=1, slices=3, image_size=48)).load()[0]
    volume = subject.volumes["lge"]
    fixed, truth = volume.image[1], volume.label[1]
    moving = -np.roll(fixed, (shift, -shift), axis=(0, 1))  # another contrast, shifted
    moved_mask = np.roll(truth, (shift, -shift), axis=(0, 1))
    return moving[None], fixed[None], moved_mask[None], truth[None]


def _dice(mask, truth):
    probabilities = torch.nn.functional.one_hot(torch.from_numpy(mask).long(), 4).permute(0, 3, 1, 2).float()
    return float(paper_dice_per_slice(probabilities, torch.from_numpy(truth)).mean())


def test_register_improves_over_copy_on_a_shifted_slice():
    _, _, copy = assemble(tiny("copy"))
    _, _, register = assemble(tiny("register", {"deformable": "bspline", "bspline_iterations": 20}))
    moving, fixed, mask, truth = _misaligned_pair()
    copied = copy.transfer(moving, fixed, mask)
    registered = register.transfer(moving, fixed, mask)
    assert _dice(registered, truth) > _dice(copied, truth) + 0.1
    assert _dice(registered, truth) > 0.85
    assert np.array_equal(registered, register.transfer(moving, fixed, mask))  # deterministic


def test_register_parameters_are_checked():
    with pytest.raises(DafnetError, match="one entry per level"):
        assemble(tiny("register", {"shrink_factors": [4, 2, 1], "smoothing_sigmas": [1.0, 0.0]}))
    with pytest.raises(DafnetError, match="source"):
        assemble(tiny("copy", {"source": "lge"}))
