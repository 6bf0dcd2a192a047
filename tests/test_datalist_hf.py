"""The ``datalist`` (MONAI/MSD-style JSON) and ``hf_datasets`` (Hugging Face datasets) sources read
through the nnunet source's preprocessing: same volumes as the nnU-Net folder / the phantom."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from dafnet.data.datalist import DatalistDataSource
from dafnet.data.hf import HFDatasetsDataSource
from dafnet.data.nnunet import NnUNetDataSource
from dafnet.data.nnunet_writer import write_nnunet_raw
from dafnet.data.phantom import PhantomDataSource
from dafnet.errors import DafnetError
from dafnet.testing import check_component

CLASSES = {"0": "background", "1": "lv", "2": "myocardium", "3": "rv"}
EXACT = {"image_size": 32, "intensity": {"clip_percentiles": None}}  # the phantom's own grid and range


@pytest.fixture(scope="module")
def phantom():
    source = PhantomDataSource(PhantomDataSource.Params(subjects=2, slices=4, image_size=32, seed=2))
    return source, source.load()


@pytest.fixture(scope="module")
def raw(phantom, tmp_path_factory):
    source, subjects = phantom
    return write_nnunet_raw(subjects, tmp_path_factory.mktemp("dl") / "raw", source.modalities, source.class_names)


def write_datalist(raw: Path, path: Path, relative: bool = True, **extra) -> Path:
    def name(kind, case, i):
        file = raw / kind / f"{case}_{i:04d}.nii.gz"
        return str(file.relative_to(path.parent)) if relative else str(file)

    entries = [{"id": c, "image": {m: name("imagesTr", c, i) for i, m in enumerate(["cine", "lge"])},
                "label": {m: name("labelsTr", c, i) for i, m in enumerate(["cine", "lge"])}}
               for c in ("phantom_000", "phantom_001")]
    path.write_text(json.dumps({"labels": CLASSES, "modality": {"0": "cine", "1": "lge"},
                                "training": entries, **extra}))
    return path


def assert_same(got, expected, atol=1e-5):
    assert [s.id for s in got] == [s.id for s in expected]
    for a, b in zip(got, expected):
        assert set(a.volumes) == set(b.volumes)
        for m, vol in a.volumes.items():
            np.testing.assert_allclose(vol.image, b.volumes[m].image, atol=atol)
            np.testing.assert_array_equal(vol.label, b.volumes[m].label)
            np.testing.assert_allclose(vol.slice_positions, b.volumes[m].slice_positions, atol=1e-4)


# ---------------------------------------------------------------- datalist
def test_datalist_reads_what_the_nnunet_source_reads(raw):
    source = DatalistDataSource(DatalistDataSource.Params(path=str(write_datalist(raw, raw / "list.json")),
                                                          **EXACT))
    assert source.modalities == ("cine", "lge") and source.class_names == ("lv", "myocardium", "rv")
    nnunet = NnUNetDataSource(NnUNetDataSource.Params(root=str(raw), **EXACT))
    assert_same(source.load(), nnunet.load(), atol=0)
    record = source.record("phantom_001", "lge")
    assert record.source == str(raw / "imagesTr" / "phantom_001_0001.nii.gz")  # the user's file, not a link
    label = source.load()[1].volumes["lge"].label
    np.testing.assert_array_equal(record.restore(label), nnunet.record("phantom_001", "lge").restore(label))


def test_datalist_equals_the_phantom_and_passes_the_contract(raw, phantom, tmp_path):
    path = write_datalist(raw, tmp_path / "list.json", relative=False)
    assert_same(DatalistDataSource(DatalistDataSource.Params(path=str(path), **EXACT)).load(), phantom[1])
    report = check_component("data_source", "datalist", {"path": str(path), "image_size": 32},
                             required_params=("path",))
    assert report.target == "dafnet.data.datalist:DatalistDataSource"


def test_datalist_formats_shared_labels_sections_and_modalities(raw, tmp_path):
    entries = [{"image": {"lge": str(raw / "imagesTr" / "phantom_000_0001.nii.gz")},
                "label": str(raw / "labelsTr" / "phantom_000_0001.nii.gz")}]
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"labels": {"background": 0, "lv": 1, "myocardium": 2, "rv": 3},
                                "validation": entries, "training": []}))
    source = DatalistDataSource(DatalistDataSource.Params(path=str(path), sections=["validation"], image_size=32))
    subjects = source.load()
    assert [s.id for s in subjects] == ["validation_0000"] and source.modalities == ("lge",)
    assert subjects[0].volumes["lge"].label.max() == 3
    chosen = DatalistDataSource(DatalistDataSource.Params(path=str(write_datalist(raw, raw / "l2.json")),
                                                          modalities=["lge"], image_size=32))
    assert chosen.modalities == ("lge",) and set(chosen.load()[0].volumes) == {"lge"}


def test_datalist_warns_of_images_its_modality_list_leaves_out(raw, tmp_path):
    path = write_datalist(raw, tmp_path / "list.json", relative=False)
    data = json.loads(path.read_text())
    data["modality"] = {"0": "cine"}  # "lge" images are present but not declared
    data["training"][0]["image"]["extra"] = data["training"][0]["image"]["lge"]  # and not declared either
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"images of \['lge', 'extra'\] are not read"):
        source = DatalistDataSource(DatalistDataSource.Params(path=str(path), image_size=32))
    assert source.modalities == ("cine",)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("labels"), "lacks 'labels'"),
    (lambda d: d.update(labels={"0": "background", "2": "x"}), "label values must be 0..L"),
    (lambda d: d["training"][0].update(image="p.nii.gz"), "needs \"image\": {modality: path}"),
    (lambda d: d["training"][1].update(id="phantom_000"), "id 'phantom_000' repeats"),
    (lambda d: d["training"][0]["label"].update(t2="x.nii.gz"), "labels of ['t2'] have no image"),
    (lambda d: d.pop("training"), "has no list 'training'"),
])
def test_datalist_bad_json(raw, tmp_path, change, message):
    path = write_datalist(raw, tmp_path / "list.json", relative=False)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DafnetError) as err:
        DatalistDataSource(DatalistDataSource.Params(path=str(path), image_size=32)).load()
    assert message in err.value.message


def test_datalist_file_errors_name_the_users_files(raw, tmp_path):
    path = write_datalist(raw, tmp_path / "list.json", relative=False)
    data = json.loads(path.read_text())
    data["training"][0]["image"]["cine"] = "missing.nii.gz"
    path.write_text(json.dumps(data))
    with pytest.raises(DafnetError, match=str(tmp_path / "missing.nii.gz")):
        DatalistDataSource(DatalistDataSource.Params(path=str(path), image_size=32)).load()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    data["training"][0]["image"]["cine"] = str(bad)
    path.write_text(json.dumps(data))
    with pytest.raises(DafnetError) as err:
        DatalistDataSource(DatalistDataSource.Params(path=str(path), image_size=32)).load()
    assert str(bad) in err.value.message and "dafnet-staged" not in err.value.message
    with pytest.raises(DafnetError, match="does not exist"):
        DatalistDataSource(DatalistDataSource.Params(path=str(tmp_path / "none.json")))


# ---------------------------------------------------------------- hf_datasets
def stacks_table(subjects) -> dict:
    return {"subject": [s.id for s in subjects],
            "cine": [s.volumes["cine"].image for s in subjects],
            "lge": [s.volumes["lge"].image for s in subjects],
            "lge_label": [s.volumes["lge"].label.astype(np.uint8) for s in subjects]}


def hf_params(path, **extra) -> HFDatasetsDataSource.Params:
    values = {"path": str(path), "images": {"cine": "cine", "lge": "lge"}, "labels": {"lge": "lge_label"},
              "class_names": ["lv", "myocardium", "rv"], "subject_column": "subject", **EXACT}
    values.update(extra)
    return HFDatasetsDataSource.Params(**values)


def test_hf_stacks_saved_to_disk_read_back_as_the_phantom(phantom, tmp_path):
    import datasets

    _, subjects = phantom
    datasets.Dataset.from_dict(stacks_table(subjects)).save_to_disk(str(tmp_path / "ds"))
    source = HFDatasetsDataSource(hf_params(tmp_path / "ds", slice_spacing_mm=10.0))
    got = source.load()
    assert [s.id for s in got] == ["phantom_000", "phantom_001"]
    for a, b in zip(got, subjects):
        for m in ("cine", "lge"):
            np.testing.assert_allclose(a.volumes[m].image, b.volumes[m].image, atol=1e-5)
            np.testing.assert_allclose(a.volumes[m].slice_positions, np.arange(4) * 10.0, atol=1e-4)
        np.testing.assert_array_equal(a.volumes["lge"].label, b.volumes["lge"].label)
        assert a.volumes["cine"].label is None
    restored = source.record("phantom_000", "lge").restore(got[0].volumes["lge"].label).transpose(2, 1, 0)
    np.testing.assert_array_equal(restored, subjects[0].volumes["lge"].label)


def test_hf_slices_grouped_by_subject_ordered_by_position_in_parquet(phantom, tmp_path):
    import datasets

    _, subjects = phantom
    rows = {"subject": [], "cine": [], "lge": [], "lge_label": [], "z": []}
    for s in subjects:
        for k in range(4):
            rows["subject"].append(s.id)
            rows["z"].append(float(s.volumes["lge"].slice_positions[k]))
            rows["cine"].append(s.volumes["lge"].image[k])  # per-slice rows share one position
            rows["lge"].append(s.volumes["lge"].image[k])
            rows["lge_label"].append(s.volumes["lge"].label[k].astype(np.uint8))
    order = np.random.default_rng(0).permutation(len(rows["z"]))  # rows in any order
    table = datasets.Dataset.from_dict({k: [v[i] for i in order] for k, v in rows.items()})
    table.to_parquet(str(tmp_path / "slices.parquet"))
    source = HFDatasetsDataSource(hf_params(tmp_path / "slices.parquet", slice_position_column="z"))
    got = {s.id: s for s in source.load()}
    for s in subjects:
        vol = got[s.id].volumes["lge"]
        np.testing.assert_allclose(vol.slice_positions, s.volumes["lge"].slice_positions, atol=1e-6)
        np.testing.assert_allclose(vol.image, s.volumes["lge"].image, atol=1e-5)
        np.testing.assert_array_equal(vol.label, s.volumes["lge"].label)


def test_hf_nifti_paths_and_dataset_dict_splits(raw, tmp_path):
    import datasets

    table = datasets.Dataset.from_dict({
        "subject": ["phantom_000", "phantom_001"],
        "cine": [str(raw / "imagesTr" / f"phantom_00{i}_0000.nii.gz") for i in range(2)],
        "lge": [str(raw / "imagesTr" / f"phantom_00{i}_0001.nii.gz") for i in range(2)],
        "lge_label": [str(raw / "labelsTr" / f"phantom_00{i}_0001.nii.gz") for i in range(2)]})
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "dd"))
    source = HFDatasetsDataSource(hf_params(tmp_path / "dd", split="test"))
    nnunet = NnUNetDataSource(NnUNetDataSource.Params(root=str(raw), **EXACT))
    expected = nnunet.load()
    for s in expected:
        s.volumes["cine"].label = None  # hf names no cine label column
    assert_same(source.load(), expected, atol=0)
    with pytest.raises(DafnetError, match="has no split 'train'"):
        HFDatasetsDataSource(hf_params(tmp_path / "dd", split="train")).load()


def test_hf_bad_input_and_contract(phantom, tmp_path):
    import datasets

    _, subjects = phantom
    table = stacks_table(subjects)
    datasets.Dataset.from_dict(table).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DafnetError, match=r"has no column\(s\) \['flair'\]"):
        HFDatasetsDataSource(hf_params(tmp_path / "ds", images={"cine": "flair"}, labels={})).load()
    with pytest.raises(DafnetError, match="labels names \\['t2'\\]"):
        HFDatasetsDataSource(hf_params(tmp_path / "ds", labels={"t2": "lge_label"}))
    with pytest.raises(DafnetError, match="absent/x .* does not exist"):
        HFDatasetsDataSource(hf_params(tmp_path / "absent" / "x")).load()
    table["lge_label"][1] = table["lge_label"][1][:2]
    datasets.Dataset.from_dict(table).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DafnetError, match="label shape"):
        HFDatasetsDataSource(hf_params(tmp_path / "bad")).load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check_component("data_source", "hf_datasets",
                                 hf_params(tmp_path / "ds", image_size=32).model_dump(),
                                 required_params=("path", "images", "class_names"))
    assert report.target == "dafnet.data.hf:HFDatasetsDataSource"
