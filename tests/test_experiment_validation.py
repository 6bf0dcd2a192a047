"""``dafnet experiment --split validation``: the tables of the validation splits, to choose configurations on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _toys import TINY_DAFNET
from rich.console import Console

from dafnet.experiment import run_experiment

torch.set_num_threads(1)
QUIET = Console(quiet=True)


def write_spec(tmp_path: Path) -> Path:
    (tmp_path / "dafnet.yaml").write_text(yaml.safe_dump(dict(TINY_DAFNET, output={"tensorboard": False,
                                                                                "figures": False})))
    copy = {k: v for k, v in TINY_DAFNET.items() if k not in ("train", "model")}
    (tmp_path / "copy.yaml").write_text(yaml.safe_dump(dict(copy, method={"name": "copy", "params": {}})))
    spec = {"name": "variants", "fractions": [0.0], "folds": [0], "reference": "DAFNet",
            "methods": {"copy": {"recipe": "copy.yaml"},
                        "DAFNet": {"recipe": "dafnet.yaml", "predictions": ["fused", "single"]},
                        "DAFNet-mean": {"evaluate_from": "DAFNet", "overrides": ["model.fuser.name=mean"],
                                        "predictions": ["fused"]}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_validation_tables_evaluate_every_done_cell_once_on_its_validation_split(tmp_path):
    from dafnet.evaluation import evaluate

    spec, out = write_spec(tmp_path), tmp_path / "out"
    run_experiment(spec, out=out, console=QUIET)
    assert not (out / "tables_validation.md").exists()
    report = run_experiment(spec, out=out, console=QUIET, tables_only=True, split="validation")
    assert report["actions"] == {}  # nothing trained
    cells = out / "cells"
    for cell in ("copy__expert__fany__fold0__all-terms", "DAFNet__expert__f0__fold0__all-terms",
                 "DAFNet-mean__expert__f0__fold0__all-terms"):
        record = json.loads((cells / cell / "per_volume_validation.json").read_text())
        splits = json.loads((cells / cell / "splits.json").read_text())
        assert record["evaluated_on"] == "validation"
        assert set(record["dice"]["fused" if "DAFNet" in cell else "single"]) == set(splits["validation"])
        assert not set(splits["validation"]) & set(json.loads((cells / cell / "per_volume.json").read_text())
                                                   ["dice"]["fused" if "DAFNet" in cell else "single"])
    text = (out / "tables_validation.md").read_text()
    assert "(validation splits)" in text and "validation volumes" in text and "test volumes" not in text
    assert (out / "table_I_validation.csv").is_file() and (out / "tables.md").is_file()
    # the mean row is `dafnet evaluate RUN model.fuser.name=mean --split validation`
    mean = json.loads((cells / "DAFNet-mean__expert__f0__fold0__all-terms" / "per_volume_validation.json")
                      .read_text())["dice"]["fused"]
    direct = evaluate(cells / "DAFNet__expert__f0__fold0__all-terms", ["dice"], out_dir=tmp_path / "direct",
                      device="cpu", overrides=["model.fuser.name=mean"], split="validation")
    assert np.mean(list(mean.values())) == pytest.approx(direct.metrics["dice"]["dice_fused_mean"], abs=1e-6)
    # computed once: a second table run reads the records
    stamp = (cells / "copy__expert__fany__fold0__all-terms" / "per_volume_validation.json").stat().st_mtime_ns
    run_experiment(spec, out=out, console=QUIET, tables_only=True, split="validation")
    assert (cells / "copy__expert__fany__fold0__all-terms" / "per_volume_validation.json").stat().st_mtime_ns == stamp


def test_an_unknown_split_is_a_clear_error(tmp_path):
    from dafnet.errors import DafnetError

    with pytest.raises(DafnetError, match="--split must be test or validation"):
        run_experiment(write_spec(tmp_path), out=tmp_path / "out", console=QUIET, tables_only=True, split="train")


def test_training_under_split_validation_prints_no_test_number(tmp_path):
    """Cells trained by ``--split validation`` evaluate their test splits (for the later test tables)
    but print none of it; the validation tables are the only numbers shown."""
    import io

    spec, out = write_spec(tmp_path), tmp_path / "out"
    console = Console(file=io.StringIO(), width=200, record=True)
    run_experiment(spec, out=out, console=console, split="validation")
    shown = console.export_text()
    cell = out / "cells" / "DAFNet__expert__f0__fold0__all-terms"
    summary = json.loads((cell / "summary.json").read_text())
    assert summary["evaluated_on"] == "test" and summary["summary"]  # evaluated and written ...
    assert "test split evaluated; its numbers are in" in shown  # ... not printed
    assert ": test split, " not in shown  # the engine's summary table title
    assert (cell / "per_volume.json").is_file() and (out / "tables_validation.md").is_file()
    assert "test volumes" not in shown
