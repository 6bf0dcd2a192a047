"""method.params.critic_real_masks: pool (docs/method.md): the mask critic's real masks drawn from the
training stream's labelled slices, one per sample under its own rotation, as the original draws them."""

from __future__ import annotations

import numpy as np
import torch
from test_method_dafnet import build, first_batch

from dafnet.data.augment import rigid_theta, warp_images, warp_labels, warp_sample
from dafnet.data.mask_pool import LabelledMaskPool
from dafnet.data.slices import PairedSliceDataset, SampleConfig
from dafnet.interfaces import Subject, Volume

SIZE = 16


def _subject(name: str, value: int) -> Subject:
    """cine and t2 stacks of 2 slices; every cine slice's mask is a square of class ``value``, every t2
    slice's a square of class 2 at another place (so a drawn mask says where it came from)."""
    cine, t2 = np.zeros((2, SIZE, SIZE), np.int64), np.zeros((2, SIZE, SIZE), np.int64)
    cine[:, 2:8, 2:8] = value
    t2[:, 9:14, 9:14] = 2
    image = np.zeros((2, SIZE, SIZE), np.float32)
    return Subject(name, {"cine": Volume(image, cine, np.array([0.0, 8.0])),
                          "t2": Volume(image.copy(), t2, np.array([0.0, 8.0]))})


def test_the_pool_draws_every_labelled_slice_and_none_the_samples_hide():
    subjects = [_subject("a", 1), _subject("b", 2)]
    config = SampleConfig(("cine", "t2"), "t2", real_mask_pool=3)
    dataset = PairedSliceDataset(subjects, config, training=True, hide_target_labels=True)
    assert len(dataset.pool) == 4  # 2 subjects x 2 cine slices; the hidden t2 labels are not in it
    torch.manual_seed(0)
    drawn = torch.stack([dataset[0]["pool_masks"] for _ in range(40)])
    assert drawn.shape == (40, 2, SIZE, SIZE)
    assert drawn[:, :, 9:14, 9:14].sum() == 0  # never a t2 mask
    classes = {int(d[:, 2:8, 2:8].sum(dim=(1, 2)).argmax()) + 1 for d in drawn}
    assert classes == {1, 2}  # both subjects' masks are drawn, whatever the sample
    both = PairedSliceDataset(subjects, config, training=True)
    assert len(both.pool) == 8  # target labels it shows are in the pool


def test_pool_masks_rotate_with_soft_edges_and_are_exact_without_rotation():
    label = np.zeros((1, SIZE, SIZE), np.int64)
    label[0, 4:12, 4:12] = 1
    exact = LabelledMaskPool([label], classes=2, rotation_degrees=0.0, soft=True).draw()
    assert torch.equal(exact[0], torch.from_numpy(label[0] == 1).float())
    torch.manual_seed(1)
    soft = torch.stack([LabelledMaskPool([label], 2, 45.0, soft=True).draw() for _ in range(5)])
    hard = torch.stack([LabelledMaskPool([label], 2, 45.0, soft=False).draw() for _ in range(5)])
    assert ((soft > 0.05) & (soft < 0.95)).any() and 0 <= soft.min() and soft.max() <= 1 + 1e-6
    assert set(hard.unique().tolist()) <= {0.0, 1.0}  # nearest: exactly binary
    assert not all(torch.equal(soft[0], s) for s in soft[1:])  # each draw its own rotation


def test_without_the_pool_nothing_is_drawn_and_the_samples_are_unchanged():
    subjects = [_subject("a", 1)]
    moving = dict(rotation_degrees=30.0, misalignment_degrees=10.0, soft_mask_classes=3)
    plain = PairedSliceDataset(subjects, SampleConfig(("cine", "t2"), "t2", **moving), training=True)
    pooled = PairedSliceDataset(subjects, SampleConfig(("cine", "t2"), "t2", real_mask_pool=3, **moving),
                                training=True)
    assert plain.pool is None and "pool_masks" not in plain[0]
    torch.manual_seed(3)
    a = plain[1]
    torch.manual_seed(3)
    b = pooled[1]  # the pool draws after the sample's own motions
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["soft_masks"], b["soft_masks"])
    evaluation = PairedSliceDataset(subjects, SampleConfig(("cine", "t2"), "t2", real_mask_pool=3), training=False)
    assert evaluation.pool is None and "pool_masks" not in evaluation[0]


def test_the_mask_critic_reads_the_pool_when_asked():
    from dafnet.methods.dafnet.steps import real_masks

    method, subjects = build(params={"critic_real_masks": "pool"})
    assert method.sample_config().real_mask_pool == method.num_classes + 1
    batch = first_batch(method.train_streams(subjects)["unlabelled"], method, size=4)
    assert batch["pool_masks"].shape == (batch["images"].shape[0], method.num_classes, 32, 32)
    assert torch.equal(real_masks(batch, method.num_classes + 1), batch["pool_masks"])
    assert "dis_mask" in method.phases()[1].step(batch, {}).terms
    assert build()[0].sample_config().real_mask_pool == 0  # the default: the batch's own masks
    assert build(losses={"adv_mask": 0}, params={"critic_real_masks": "pool"})[0].sample_config().real_mask_pool == 0


def test_host_and_held_datasets_show_the_same_labels_and_pool():
    """The hidden-label rule is applied once (``shown_labels``): the host and the device-held paths agree."""
    subjects = [_subject("a", 1), _subject("b", 2)]
    config = SampleConfig(("cine", "t2"), "t2", real_mask_pool=3)
    host = PairedSliceDataset(subjects, config, training=True, hide_target_labels=True)
    held = PairedSliceDataset(subjects, config, training=True, hide_target_labels=True, device="cpu")
    assert set(host.shown_labels) == {(0, "cine"), (1, "cine")}
    for item in range(len(host)):
        a, b = host[item], held[item]
        assert torch.equal(a["masks"], b["masks"]) and torch.equal(a["labelled"], b["labelled"])
        assert not a["labelled"][1].any() and a["masks"][1].sum() == 0  # the target's labels are hidden
    assert len(held.pool) == len(host.pool) == 4


def test_warp_labels_is_the_label_warp_of_warp_sample():
    masks = torch.randint(0, 3, (2, SIZE, SIZE))
    theta = torch.stack([rigid_theta(20.0, SIZE, SIZE, (0.1, 0.0)), rigid_theta(-7.0, SIZE, SIZE)])
    _, expected = warp_sample(torch.zeros(2, 1, SIZE, SIZE), masks, theta)
    assert torch.equal(warp_labels(masks, theta), expected)
    assert not torch.equal(expected, masks)


def test_warp_images_is_the_image_warp_of_warp_sample():
    images = torch.rand(2, 1, SIZE, SIZE)
    theta = torch.stack([rigid_theta(20.0, SIZE, SIZE, (0.1, 0.0)), rigid_theta(-7.0, SIZE, SIZE)])
    expected, _ = warp_sample(images, torch.zeros(2, SIZE, SIZE, dtype=torch.long), theta)
    assert torch.equal(warp_images(images, theta), expected)
    assert not torch.allclose(expected, images)
