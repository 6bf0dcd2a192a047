"""The alignment error against the truth: its math, the phantom's coordinates, the data path and
DAFNet's per-epoch summary (the CLI metric is in test_evaluate_cli)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dafnet.builder import build
from dafnet.components.aligners.thin_plate import pixel_grid
from dafnet.data.phantom import PhantomDataSource
from dafnet.data.phantom_shapes import LABEL_OF_TISSUE, sample_anatomy
from dafnet.data.phantom_tissues import tissue_map
from dafnet.data.slices import PairedSliceDataset, SampleConfig
from dafnet.interfaces import AlignmentErrors, Facts, MetricInputs, Volume
from dafnet.methods.dafnet.alignment import alignment_summary
from dafnet.metrics.alignment import AlignmentMetric
from dafnet.metrics.alignment_error import error_maps, error_statistics

H, W, SPACING = 12, 16, 2.0


def translated(shift_mm: tuple[float, float], batch: int = 2) -> torch.Tensor:
    """(B, 2, H, W) coordinates of a slice showing the anatomy shifted by ``shift_mm`` (u, v)."""
    v, u = torch.meshgrid(torch.arange(H) * SPACING, torch.arange(W) * SPACING, indexing="ij")
    return torch.stack([u + shift_mm[0], v + shift_mm[1]])[None].expand(batch, -1, -1, -1).float()


def test_the_identity_aligner_scores_exactly_the_identity_error():
    aligner = build("aligner", "identity", {}, Facts(image_size=(H, W), anatomy_channels=2))
    moving = torch.zeros(2, 2, H, W)
    grid = aligner(moving, moving).grid
    source, target = translated((3.0, -1.0)), translated((0.5, 0.0)) + torch.randn(2, 2, H, W)
    counted = torch.rand(2, H, W) > 0.3
    aligner_mm, identity_mm = error_maps(grid, source, target, counted)
    assert torch.equal(aligner_mm.isnan(), ~counted) and torch.equal(aligner_mm[counted], identity_mm[counted])
    direct = torch.linalg.vector_norm(source - target, dim=1)  # the definition, without any sampling
    assert torch.allclose(identity_mm[counted], direct[counted], atol=1e-4)


def test_a_grid_that_undoes_a_known_shift_has_no_error():
    shift = (5.0, -3.0)  # mm; 2.5 and 1.5 pixels: bilinear between pixel centres
    source, target = translated(shift), translated((0.0, 0.0))
    # target pixel p shows anatomy x_p; the source shows it at x_p - shift, i.e. shift / spacing pixels back
    base = pixel_grid(H, W, dtype=torch.float32)
    step = torch.tensor([2.0 / (W - 1), 2.0 / (H - 1)])
    grid = (base - torch.tensor(shift) / SPACING * step).expand(2, -1, -1, -1)
    counted = torch.ones(2, H, W, dtype=torch.bool)
    aligner_mm, identity_mm = error_maps(grid, source, target, counted)
    inside = aligner_mm.isfinite()
    # source columns < 0 and rows > H - 1 are sampled: outside the slice, not counted
    assert inside[:, :10, 3:].all() and not inside[:, :, :3].any() and not inside[:, 10:].any()
    assert float(aligner_mm[inside].abs().max()) < 1e-4
    assert torch.allclose(identity_mm, torch.full_like(identity_mm, float(np.hypot(*shift))))
    numbers = error_statistics(aligner_mm, identity_mm)
    assert numbers["align_p95_mm"] < 1e-4 and numbers["identity_median_mm"] == pytest.approx(np.hypot(*shift))
    assert numbers["pixels"] == float(inside.sum()) and 0 < numbers["outside_percent"] < 100


def test_phantom_coordinates_are_where_its_labels_were_rendered():
    source = PhantomDataSource(PhantomDataSource.Params(subjects=1, slices=3, image_size=32))
    subject = source.subject(0)
    anatomy = sample_anatomy(source._rng(0, 0))
    for volume in subject.volumes.values():
        coordinates = volume.coordinates
        assert coordinates.shape == (3, 2, 32, 32) and coordinates.dtype == np.float32
        z = volume.slice_positions - anatomy.table_offset
        labels = LABEL_OF_TISSUE[tissue_map(anatomy, coordinates[:, 0].astype(np.float64),
                                            coordinates[:, 1].astype(np.float64), z[:, None, None])]
        assert (labels == volume.label).mean() > 0.999  # float32 storage may flip a boundary pixel
        # millimetres: neighbouring pixels lie about one pixel spacing apart in the anatomy
        step = np.linalg.norm(np.diff(coordinates, axis=-1), axis=1)
        assert np.median(step) == pytest.approx(source.spacing_mm, rel=0.1)
    cine, lge = subject.volumes["cine"].coordinates, subject.volumes["lge"].coordinates
    assert np.abs(cine - lge).max() > 1.0  # separately acquired stacks: not aligned


def test_volume_rejects_coordinates_of_the_wrong_shape():
    image = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="coordinates shape"):
        Volume(image, None, np.arange(2.0), coordinates=np.zeros((2, 4, 4), np.float32))


def test_only_evaluation_samples_carry_coordinates_and_only_when_known():
    subjects = PhantomDataSource(PhantomDataSource.Params(subjects=1, slices=2, image_size=16)).load()
    config = SampleConfig(("cine", "lge"), "lge")
    sample = PairedSliceDataset(subjects, config, training=False)[0]
    assert sample["coordinates"].shape == (2, 1, 2, 16, 16) and sample["has_coordinates"].tolist() == [True, True]
    lge = subjects[0].volumes["lge"]
    assert torch.equal(sample["coordinates"][1, 0], torch.from_numpy(lge.coordinates[0]))
    assert "coordinates" not in PairedSliceDataset(subjects, config, training=True)[0]
    for volume in subjects[0].volumes.values():
        volume.coordinates = None
    assert "coordinates" not in PairedSliceDataset(subjects, config, training=False)[0]


def test_summary_and_metric_pool_pixels_and_name_each_source():
    aligner = torch.tensor([[[1.0, 2.0], [float("nan"), float("nan")]]])
    identity = torch.tensor([[[3.0, 4.0], [5.0, float("nan")]]])
    summary = alignment_summary({"align_error_a": aligner, "identity_error_a": identity,
                                 "align_error_b": aligner + 1, "identity_error_b": identity})
    assert summary["align_median_mm"] == pytest.approx(2.0) and summary["identity_median_mm"] == pytest.approx(3.5)
    assert summary["align_b_median_mm"] == pytest.approx(2.5) and "align_a_p95_mm" in summary
    assert alignment_summary({"paper_fused": torch.ones(2)}) == {}

    metric = AlignmentMetric(AlignmentMetric.Params(figure=False), Facts())
    metric.update(MetricInputs(case_ids=["c0"], alignment=AlignmentErrors("a", aligner, identity)))
    result = metric.compute()
    assert result.summary["alignment_pixels"] == 2.0 and result.summary["alignment_outside_percent"] == \
        pytest.approx(100 / 3)
    assert result.per_case[0]["case"] == "c0" and result.per_case[0]["align_p95_mm"] == pytest.approx(1.95)
    metric.reset()
    empty = metric.compute()
    assert empty.summary == {"alignment_pixels": 0.0} and "n/a" in empty.notes[0]
