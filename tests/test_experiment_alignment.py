"""dafnet experiment: DAFNet's aligned copy and alignment error per test volume (per_volume.json),
in the tables, upgraded into cells evaluated before they were recorded, and for evaluate_from rows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _toys import TINY_DAFNET
from rich.console import Console

from dafnet.experiment import load_spec, run_experiment
from dafnet.experiment.cell_evaluation import cell_status
from dafnet.experiment.grid import expand

torch.set_num_threads(1)

QUIET = Console(quiet=True)
DAFNET = "DAFNet__expert__f100__fold0__all-terms"
MEAN = "DAFNet-mean__expert__f100__fold0__all-terms"
COPY = "copy__expert__fany__fold0__all-terms"


def write_spec(tmp: Path, **changes) -> Path:
    recipe = dict(TINY_DAFNET, output={"tensorboard": False, "figures": False})
    (tmp / "dafnet.yaml").write_text(yaml.safe_dump(recipe))
    (tmp / "copy.yaml").write_text(yaml.safe_dump({"name": "tiny", "method": {"name": "copy"},
                                                   "data": TINY_DAFNET["data"]}))
    spec = {"name": "aligned", "fractions": [1.0], "folds": [0], "reference": "DAFNet",
            "methods": {"copy": {"recipe": "copy.yaml"},
                        "DAFNet": {"recipe": "dafnet.yaml", "predictions": ["fused", "aligned_copy"]},
                        "DAFNet-mean": {"evaluate_from": "DAFNet", "overrides": ["model.fuser.name=mean"],
                                        "predictions": ["fused", "aligned_copy"]}}}
    spec.update(changes)
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aligned")
    spec = write_spec(tmp)
    report = run_experiment(spec, out=tmp / "out", console=QUIET)
    return spec, tmp / "out", report


def volumes(out: Path, cell: str) -> dict:
    return json.loads((out / "cells" / cell / "per_volume.json").read_text())


def test_per_volume_json_has_the_numbers_of_dafnet_evaluate(grid, tmp_path):
    from dafnet.evaluation import evaluate

    _, out, report = grid
    assert report["actions"] == {COPY: "evaluated", DAFNET: "trained", MEAN: "evaluated"}
    record = volumes(out, DAFNET)
    test_ids = set(json.loads((out / "cells" / DAFNET / "splits.json").read_text())["test"])
    assert record["version"] == 2 and {"copy_cine", "aligned_copy_cine", "aligned_copy"} <= set(record["dice"])
    assert record["dice"]["aligned_copy"] == record["dice"]["aligned_copy_cine"]  # cine: the only other modality
    assert set(record["dice"]["aligned_copy"]) == set(record["alignment"]["align_median_mm"]) == test_ids
    direct = evaluate(out / "cells" / DAFNET, ["dice", "alignment"], out_dir=tmp_path / "direct", device="cpu")
    for row in direct.per_volume:
        case = row["case"]
        assert record["dice"]["aligned_copy"][case] == pytest.approx(row["dice_aligned_copy_cine"], abs=1e-6)
        assert record["dice"]["copy_cine"][case] == pytest.approx(row["dice_copy_cine"], abs=1e-6)
        for column in ("align_median_mm", "identity_median_mm"):
            assert record["alignment"][column][case] == pytest.approx(row[column], abs=1e-6)
    # the copy baseline's prediction is DAFNet's copy reference; it has no references of its own
    copy = volumes(out, COPY)
    assert copy["dice"]["single"] == pytest.approx(record["dice"]["copy_cine"], abs=1e-6)
    assert copy["version"] == 2 and copy["alignment"] == {} and "aligned_copy" not in copy["dice"]


def test_evaluate_from_cells_carry_the_aligner_of_their_trained_cell(grid):
    _, out, _ = grid
    trained, mean = volumes(out, DAFNET), volumes(out, MEAN)
    assert mean["dice"]["aligned_copy"] == pytest.approx(trained["dice"]["aligned_copy"], abs=1e-9)
    assert mean["alignment"]["align_median_mm"] == pytest.approx(trained["alignment"]["align_median_mm"], abs=1e-9)
    assert mean["dice"]["single"] == trained["dice"]["single"]


def test_tables_show_the_aligned_copy_row_and_the_alignment_table(grid):
    _, out, _ = grid
    record = volumes(out, DAFNET)
    rows = {r["row"]: r for r in csv.DictReader((out / "table_I.csv").open())}
    aligned = rows["DAFNet (aligned copy)"]
    assert float(aligned["mean"]) == pytest.approx(np.mean(list(record["dice"]["aligned_copy"].values())), abs=1e-3)
    copy = volumes(out, COPY)["dice"]["single"]
    assert int(aligned["volumes_vs_copy"]) == len(copy)
    assert int(aligned["volumes_above_copy"]) == sum(record["dice"]["aligned_copy"][k] > copy[k] for k in copy)
    assert "DAFNet-mean (aligned copy)" in rows and "DAFNet (fused)" in rows
    text = (out / "tables.md").read_text()
    assert "| DAFNet (aligned copy) | 1 |" in text and "Alignment error against the truth" in text
    by = {r["row"]: r for r in csv.DictReader((out / "table_alignment.csv").open())}
    aligner, identity = (record["alignment"][c] for c in ("align_median_mm", "identity_median_mm"))
    assert float(by["DAFNet"]["aligner_mm_mean"]) == pytest.approx(np.mean(list(aligner.values())), abs=1e-3)
    assert float(by["DAFNet"]["identity_mm_mean"]) == pytest.approx(np.mean(list(identity.values())), abs=1e-3)
    assert int(by["DAFNet"]["volumes_aligner_better"]) == sum(aligner[k] < identity[k] for k in aligner)
    assert set(by) == {"DAFNet", "DAFNet-mean"} and "copy" not in by


def test_an_old_per_volume_json_is_upgraded_without_training(grid, tmp_path):
    spec, first, _ = grid
    out = tmp_path / "out"
    shutil.copytree(first, out)
    new = {cell: volumes(out, cell) for cell in (DAFNET, MEAN, COPY)}
    for cell, record in new.items():  # as written before the references were recorded
        dice = {k: v for k, v in record["dice"].items() if "copy_" not in k and k != "aligned_copy"}
        (out / "cells" / cell / "per_volume.json").write_text(json.dumps({"evaluated_on": "test", "dice": dice}))
    log = (out / "cells" / DAFNET / "log.csv").read_text()
    assert cell_status(out / "cells" / DAFNET) == "done" and cell_status(out / "cells" / DAFNET, True) == "evaluate"
    assert run_experiment(spec, out=out, dry_run=True)["status"] == {COPY: "done", DAFNET: "evaluate",
                                                                     MEAN: "evaluate"}
    run_experiment(spec, out=out, console=QUIET, tables_only=True)  # the old files as they are: n/a, no crash
    text = (out / "tables.md").read_text()
    assert "| DAFNet (aligned copy) | - | n/a |" in text and "| DAFNet | - | n/a |" in text
    assert "Cells evaluated before the aligned copy was recorded" in text and DAFNET in text
    rows = {r["row"]: r for r in csv.DictReader((out / "table_I.csv").open())}
    assert rows["DAFNet (aligned copy)"]["volumes"] == "0" and rows["DAFNet (fused)"]["mean"]

    report = run_experiment(spec, out=out, console=QUIET)
    assert report["actions"] == {COPY: "skipped", DAFNET: "evaluated", MEAN: "evaluated"}
    assert (out / "cells" / DAFNET / "log.csv").read_text() == log  # nothing trained
    for cell in (DAFNET, MEAN):
        upgraded = volumes(out, cell)
        assert upgraded["version"] == 2 and set(upgraded["dice"]) == set(new[cell]["dice"])
        for kind, values in new[cell]["dice"].items():
            assert upgraded["dice"][kind] == pytest.approx(values, abs=1e-6)
        assert upgraded["alignment"]["align_median_mm"] == pytest.approx(new[cell]["alignment"]["align_median_mm"])
    assert "Cells evaluated before" not in (out / "tables.md").read_text()


def test_tables_average_a_volumes_alignment_over_its_seeds(tmp_path):
    from dafnet.experiment.tables import build_tables

    spec, base = load_spec(write_spec(tmp_path, seeds=[0, 1]))
    cells, reference = expand(spec, base)
    trained = [c for c in cells if c.method != "copy"]
    results = {c.id: {"single": {"s1": 50.0, "s2": 60.0}} for c in cells if c.method == "copy"}
    results.update({c.id: {"fused": {"s1": 70.0, "s2": 70.0},
                           "aligned_copy": {"s1": 40.0 + 20 * c.seed, "s2": 65.0}} for c in trained})
    alignment = {c.id: {"align_median_mm": {"s1": 4.0 + 2 * c.seed, "s2": 9.0},
                        "identity_median_mm": {"s1": 8.0, "s2": 8.0}} for c in trained}
    tables = {t.key: t for t in build_tables(spec, cells, reference, results, alignment)}
    rows = dict(tables["I"].rows)
    aligned = rows["DAFNet (aligned copy)"][0]
    assert aligned.values == {"0:s1": 50.0, "0:s2": 65.0} and aligned.seeds == 2  # seeds 0 and 1 averaged
    assert (aligned.above_copy, aligned.copy_volumes) == (1, 2)
    entry = dict(tables["alignment"].rows)["DAFNet"][0]
    assert entry.values == {"0:s1": 5.0, "0:s2": 9.0} and entry.identity == {"0:s1": 8.0, "0:s2": 8.0}
    assert entry.better == 1 and entry.text().startswith("7.0 ± 2.0 vs 8.0 ± 0.0 (1/2 < identity")
    no_numbers = build_tables(spec, cells, reference, results)[-1]  # e.g. data without coordinates
    assert [e.text() for _, (e,) in no_numbers.rows] == ["n/a", "n/a"]


def test_aligned_copy_is_only_a_prediction_of_methods_that_report_it(tmp_path, capsys):
    from dafnet.cli import main

    unet = {"name": "tiny", "method": {"name": "unet", "params": {"mode": "multi"}}, "data": TINY_DAFNET["data"]}
    (tmp_path / "unet.yaml").write_text(yaml.safe_dump(unet))
    spec = write_spec(tmp_path, methods={"UNet": {"recipe": "unet.yaml", "predictions": ["single", "aligned_copy"]}},
                      reference="UNet")
    with pytest.raises(SystemExit) as exc:
        main(["experiment", str(spec), "--dry-run"])
    assert exc.value.code == 2
    assert "methods.UNet.predictions: 'aligned_copy' is not a prediction type" in " ".join(
        capsys.readouterr().err.split())
