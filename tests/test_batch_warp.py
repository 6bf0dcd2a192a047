"""data.augment.warp: batch (the training samples' motions drawn as ever, applied to the whole batch by
the method's on_device hook) and data.slices_on_device (the training slices held on the training
device): the same batches and the same training as the per-sample path, and the refused combinations."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from dafnet.assemble import build_data_source, build_method
from dafnet.config import RecipeError
from dafnet.config.resolve import parse_recipe, resolve
from dafnet.data.augment import THETA_KEY
from dafnet.interfaces import MethodContext
from dafnet.methods.slice_streams import single_modality_streams


def tiny(warp: str = "sample", on_device: bool = False, **train) -> dict:
    """A tiny DAFNet (3 modalities, k = 2, 32 px) with rotation, misalignment and the soft masks of the
    mask critic (its default real_mask_rotation: bilinear) on."""
    return {
        "name": "tiny-warp",
        "data": {"source": {"name": "phantom", "params": {"subjects": 4, "slices": 3, "image_size": 32,
                                                          "modalities": ["cine", "t2", "lge"]}},
                 "annotation_fraction": 0.5, "slices_on_device": on_device,
                 "split": {"folds": 1, "train": 0.5, "validation": 0.25, "test": 0.25},
                 "augment": {"rotation_degrees": 20.0, "misalignment_degrees": 10.0, "misalignment_shift": 0.1,
                             "warp": warp}},
        "method": {"name": "dafnet", "params": {"num_candidates": 2}},
        "model": {
            "anatomy_encoder": {"name": "unet_shared_decoder", "params": {"base_filters": 4, "depth": 2}},
            "modality_encoder": {"name": "vae", "params": {"filters": [4, 8]}},
            "segmentor": {"name": "conv_head", "params": {"filters": 8}},
            "discriminator": {"name": "lsgan_conv", "params": {"filters": [4, 8, 8], "strides": [2, 2, 1]}},
        },
        "train": {"batch_size": 3, **train},
        "output": {"tensorboard": False, "figures": False},
    }


def stream_batches(recipe: dict, subjects: list, slices_device: str | None = None) -> dict[str, dict]:
    """The first batch of each training stream, through the method's collate and on_device, seeded."""
    resolved = resolve(parse_recipe(recipe))
    _, facts = build_data_source(resolved)
    method = build_method(resolved, facts, slices_device=slices_device)
    torch.manual_seed(7)
    out = {}
    for name, dataset in method.train_streams(subjects).items():
        loader = DataLoader(dataset, batch_size=3, shuffle=True, collate_fn=method.collate,
                            generator=torch.Generator().manual_seed(1))
        batch = next(iter(loader))
        out[name] = (batch, method.on_device(batch, name))
    return out


def assert_same_batch(got: dict, want: dict) -> None:
    assert list(got) == list(want)  # every key the method reads, no more (augment_theta consumed)
    for key, value in want.items():
        assert got[key].shape == value.shape and got[key].dtype == value.dtype, key
        if value.is_floating_point():
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5, msg=key)
        else:
            assert torch.equal(got[key], value), key


@pytest.fixture(scope="module")
def subjects():
    source, _ = build_data_source(resolve(parse_recipe(tiny())))
    return source.load()


@pytest.mark.parametrize("held", [None, "cpu"], ids=["host", "slices_on_device"])
def test_a_batch_warped_on_the_device_is_the_sample_paths_batch(subjects, held):
    want = stream_batches(tiny("sample"), subjects)
    got = stream_batches(tiny("batch", on_device=held is not None), subjects, slices_device=held)
    assert set(got) == set(want) == {"labelled", "unlabelled"}
    for name in want:
        raw, warped = got[name]
        sample_batch, unchanged = want[name]
        assert unchanged is sample_batch  # the sample path's on_device leaves its batch alone
        assert THETA_KEY in raw and raw[THETA_KEY].shape == (3, 3, 2, 3, 3) and "soft_masks" not in raw
        assert not torch.equal(raw["images"], sample_batch["images"])  # the loader did not warp
        assert "soft_masks" in sample_batch and sample_batch["soft_masks"].shape == (3, 3, 2, 3, 32, 32)
        assert_same_batch(warped, sample_batch)


def test_the_single_modality_methods_streams_warp_on_the_device_too(subjects):
    """unet and sdnet (single_modality_streams) draw the same rotations; warp_batch applies them."""
    from dafnet.data.augment import warp_batch

    batches = {}
    for warp in ("sample", "batch"):
        context = MethodContext(rotation_degrees=20.0, augment_warp=warp, annotation_fraction=0.5)
        dataset = single_modality_streams(subjects, context, ("cine", "lge"), "lge")["labelled"]
        torch.manual_seed(3)
        batches[warp] = next(iter(DataLoader(dataset, batch_size=4, shuffle=True,
                                             generator=torch.Generator().manual_seed(2))))
    assert THETA_KEY in batches["batch"]
    assert_same_batch(warp_batch(batches["batch"]), batches["sample"])


def test_training_with_the_batch_warp_logs_the_sample_runs_losses(tmp_path, one_thread):
    """Two epochs through the engine: the on_device hook runs on every batch of both streams (a batch
    left unwarped would train on other images and miss the mask critic's soft masks), so the
    losses are those of the sample run, to float tolerance; slices_on_device (here the CPU) too."""
    from dafnet.engine import train

    histories = {}
    for warp, held in (("sample", False), ("batch", True)):
        recipe = tiny(warp, on_device=held, epochs=2, iterations_per_epoch=2, swa_start=None, patience=None)
        histories[warp] = train(resolve(parse_recipe(recipe)), run_dir=tmp_path / warp).history
    assert len(histories["sample"]) == len(histories["batch"]) == 2
    checked = 0
    for want, got in zip(histories["sample"], histories["batch"]):
        for key, value in want.items():
            if key.startswith(("labelled/", "unlabelled/")):
                assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
                checked += 1
    assert checked >= 40


@pytest.mark.parametrize("data, key, words", [
    ({"slices_on_device": True, "num_workers": 2, "augment": {"warp": "batch"}}, "data.slices_on_device",
     "num_workers"),
    ({"slices_on_device": True}, "data.slices_on_device", "augment.warp: batch"),
    ({"augment": {"warp": "gpu"}}, "data.augment.warp", "batch"),
])
def test_combinations_that_cannot_work_name_the_recipe_key(data, key, words):
    recipe = tiny()
    recipe["data"] = {**recipe["data"], "slices_on_device": False, **data,
                      "augment": {**recipe["data"]["augment"], "warp": "sample", **data.get("augment", {})}}
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe)
    assert [issue.path for issue in err.value.issues] == [key]
    assert words in str(err.value)


def test_the_engine_hands_every_training_batch_to_on_device_with_its_stream():
    """EpochBatches (the engine's training batches, also the SWA BatchNorm pass's) call the method's
    on_device(batch, stream) on each batch, without autograd, and give the phases what it returns."""
    from dafnet.engine.streams import EpochBatches

    class Cycle:
        def __init__(self, name):
            self.name, self.count = name, 0

        def next(self):
            self.count += 1
            return {"x": torch.ones(1, requires_grad=True), "from": self.name, "n": self.count}

    seen = []

    def on_device(batch, stream):
        seen.append((stream, batch["n"], torch.is_grad_enabled()))
        return {**batch, "y": batch["x"] * 2}

    batches = EpochBatches({"a": Cycle("a"), "b": Cycle("b")}, on_device)
    got = [batches.next("a"), batches.next("b"), batches.next("a")]
    assert seen == [("a", 1, False), ("b", 1, False), ("a", 2, False)]
    assert [g["from"] for g in got] == ["a", "b", "a"] and not got[0]["y"].requires_grad
    assert EpochBatches({"a": Cycle("a")}).next("a")["n"] == 1  # no hook: the batch as it is
