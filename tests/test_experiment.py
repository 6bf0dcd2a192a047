"""dafnet experiment: grid expansion, running, resuming, skipping, tables, errors."""

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

from dafnet.errors import DafnetError
from dafnet.experiment import load_spec, run_experiment
from dafnet.experiment.grid import expand
from dafnet.experiment.tables import wilcoxon_p

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
QUIET = Console(quiet=True)

TINY = {
    "name": "tiny",
    "method": {"name": "unet", "params": {"mode": "multi", "base_filters": 4, "depth": 2}},
    "data": {"source": {"name": "phantom", "params": {"subjects": 8, "slices": 2, "image_size": 32}},
             "modalities": ["cine", "lge"], "target": "lge",
             "split": {"folds": 2, "validation": 0.25}},
    "train": {"epochs": 1, "batch_size": 4, "iterations_per_epoch": 2, "swa_start": None},
    "output": {"tensorboard": False, "figures": False},
}


def write_spec(tmp_path: Path, **changes) -> Path:
    recipe = tmp_path / "unet.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    copy = dict(TINY, method={"name": "copy", "params": {}})
    copy.pop("train")
    (tmp_path / "copy.yaml").write_text(yaml.safe_dump(copy))
    spec = {"name": "tiny_grid",
            "methods": {"UNet-multi": {"recipe": "unet.yaml"},
                        "UNet-single": {"recipe": "unet.yaml", "overrides": ["method.params.mode=single"]},
                        "copy": {"recipe": "copy.yaml"}},
            "reference": "UNet-multi", "fractions": [1.0, 0.0], "folds": [0, 1]}
    spec.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    spec = write_spec(tmp)
    report = run_experiment(spec, out=tmp / "out", console=QUIET)
    return spec, tmp / "out", report


def test_grid_runs_every_cell_and_records_failures(grid):
    _, out, report = grid
    actions = report["actions"]
    assert len(actions) == 2 * 2 * 2 + 2  # two trained methods x 2 fractions x 2 folds + copy per fold
    failed = {c for c, a in actions.items() if a == "failed"}
    assert failed == {"UNet-single__expert__f0__fold0__all-terms", "UNet-single__expert__f0__fold1__all-terms"}
    assert "no annotated slices" in json.loads((out / "cells" / sorted(failed)[0] / "failed.json").read_text())["error"]
    assert {a for c, a in actions.items() if c not in failed} == {"trained", "evaluated"}


def test_the_cli_exits_2_naming_the_failed_cells(grid, capsys):
    from dafnet.cli import main

    spec, out, _ = grid
    with pytest.raises(SystemExit) as exc:  # done cells are skipped, the failed ones retried (and fail again)
        main(["experiment", str(spec), "--out", str(out)])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "2 cell(s) failed: UNet-single__expert__f0__fold0__all-terms" in err and "failed.json" in err


def test_per_volume_values_match_the_engine_summary(grid):
    _, out, _ = grid
    for folder in (out / "cells").iterdir():
        if not (folder / "summary.json").exists():
            continue
        summary = json.loads((folder / "summary.json").read_text())["summary"]
        volumes = json.loads((folder / "per_volume.json").read_text())["dice"]["single"]
        test_ids = json.loads((folder / "splits.json").read_text())["test"]
        assert set(volumes) == set(test_ids)
        assert np.mean(list(volumes.values())) == pytest.approx(summary["dice_single"], abs=1e-6)


def test_tables_in_the_paper_shapes(grid):
    _, out, report = grid
    text = (out / "tables.md").read_text()
    assert "Table I" in text and "Table II" not in text and "Table IV" not in text
    rows = list(csv.DictReader((out / "table_I.csv").open()))
    by = {(r["row"], r["column"]): r for r in rows}
    assert set(by) == {(m, c) for m in ("UNet-multi", "UNet-single", "copy") for c in ("100%", "0%")}
    assert by[("UNet-single", "0%")]["mean"] == "" and by[("UNet-single", "0%")]["volumes"] == "0"
    assert "n/a" in text
    # pooled over both folds: every test volume of fold 0 and fold 1
    n = sum(len(json.loads((out / "cells" / f"copy__expert__fany__fold{k}__all-terms" / "splits.json")
                           .read_text())["test"]) for k in (0, 1))
    assert int(by[("copy", "0%")]["volumes"]) == n and by[("copy", "0%")]["mean"] == by[("copy", "100%")]["mean"]
    copy_cells = [out / "cells" / f"copy__expert__fany__fold{k}__all-terms" / "per_volume.json" for k in (0, 1)]
    values = [v for p in copy_cells for v in json.loads(p.read_text())["dice"]["single"].values()]
    assert float(by[("copy", "0%")]["mean"]) == pytest.approx(np.mean(values), abs=1e-3)
    assert float(by[("copy", "0%")]["std"]) == pytest.approx(np.std(values), abs=1e-3)


def test_rerun_skips_finished_cells(grid):
    spec, out, first = grid
    before = (out / "tables.md").read_text()
    report = run_experiment(spec, out=out, console=QUIET)
    done = {c: a for c, a in report["actions"].items() if a != "failed"}
    assert set(done.values()) == {"skipped"} and len(done) == 8
    assert (out / "tables.md").read_text() == before


def test_jobs_run_cells_side_by_side_with_one_log_each(tmp_path):
    spec = write_spec(tmp_path, methods={"UNet-multi": {"recipe": "unet.yaml"}, "copy": {"recipe": "copy.yaml"}},
                      reference="UNet-multi", fractions=[1.0])
    out = tmp_path / "out"
    report = run_experiment(spec, out=out, console=QUIET, jobs=2)
    assert sorted(report["actions"].values()) == ["evaluated", "evaluated", "trained", "trained"]
    for cell_id in report["actions"]:
        assert (out / "cells" / cell_id / "per_volume.json").is_file()
        assert (out / "logs" / f"{cell_id}.log").is_file()
    rows = list(csv.DictReader((out / "table_I.csv").open()))
    assert {r["row"] for r in rows} == {"UNet-multi", "copy"} and all(r["mean"] for r in rows)
    again = run_experiment(spec, out=out, console=QUIET, jobs=2)
    assert set(again["actions"].values()) == {"skipped"}
    with pytest.raises(DafnetError, match="jobs"):
        run_experiment(spec, out=out, console=QUIET, jobs=0)


def test_tables_only_runs_nothing(tmp_path):
    spec = write_spec(tmp_path, methods={"copy": {"recipe": "copy.yaml"}}, reference="copy", folds=[0])
    report = run_experiment(spec, out=tmp_path / "out", console=QUIET, tables_only=True)
    assert report["actions"] == {} and not (tmp_path / "out" / "cells").exists()
    assert "n/a" in (tmp_path / "out" / "tables.md").read_text()


def test_interrupted_cell_is_resumed(tmp_path):
    spec = write_spec(tmp_path, methods={"UNet-multi": {"recipe": "unet.yaml"}}, fractions=[1.0], folds=[0])
    out = tmp_path / "out"
    run_experiment(spec, out=out, console=QUIET)
    cell = out / "cells" / "UNet-multi__expert__f100__fold0__all-terms"
    for name in ("summary.json", "per_volume.json"):  # as if stopped after epoch 1 of 2
        (cell / name).unlink()
    shutil.rmtree(cell / "export")
    longer = write_spec(tmp_path, methods={"UNet-multi": {"recipe": "unet.yaml"}}, fractions=[1.0], folds=[0],
                        overrides=["train.epochs=2"])
    report = run_experiment(longer, out=out, console=QUIET)
    assert report["actions"] == {cell.name: "resumed"}
    assert len((cell / "log.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert json.loads((cell / "metadata.json").read_text())["resumed"][0]["after_epoch"] == 1


def test_dry_run_lists_cells_without_running(tmp_path, capsys):
    from dafnet.cli import main

    spec = write_spec(tmp_path, ablations={"no_ce": ["method.params.ce_weight=0"]})
    with pytest.raises(SystemExit) as exc:
        main(["experiment", str(spec), "--out", str(tmp_path / "out"), "--dry-run"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "UNet-multi__expert__f100__fold0__no_ce" in text and "14 cells" in text  # 10 + 2 x 2 ablated
    assert not (tmp_path / "out").exists()
    cells, reference = expand(*load_spec(spec))
    assert reference == "UNet-multi"
    assert {c.ablation for c in cells if c.method == "UNet-single"} == {"all terms"}
    ablated = next(c for c in cells if c.ablation == "no_ce")
    assert ablated.recipe.method.params["ce_weight"] == 0


def test_pairing_modes_become_method_overrides(tmp_path):
    spec = write_spec(tmp_path, pairings=["expert", "random", "automated"], fractions=[1.0], folds=[0])
    cells, _ = expand(*load_spec(spec))
    got = {(c.method, c.pairing) for c in cells}
    # unet has no pairing; copy has expert and random (shuffled) but no candidates
    assert got == {("UNet-multi", "expert"), ("UNet-single", "expert"), ("copy", "expert"), ("copy", "random")}
    random = next(c for c in cells if c.pairing == "random")
    assert random.recipe.method.params["pairing"] == "shuffled"


@pytest.mark.parametrize("change, needle", [
    ({"folds_typo": [0]}, "folds_typo"),
    ({"fractions": [1.5]}, "fractions"),
    ({"reference": "nobody"}, "reference"),
    ({"pairings": ["sideways"]}, "pairings"),
    ({"overrides": ["train.epochz=1"]}, "epochz"),
    ({"seeds": [1, 1]}, "seeds"),
])
def test_bad_specs_exit_2_with_the_key(tmp_path, capsys, change, needle):
    from dafnet.cli import main

    spec = write_spec(tmp_path, **change)
    with pytest.raises(SystemExit) as exc:
        main(["experiment", str(spec), "--dry-run"])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert needle in captured.out + captured.err


def _unet_rows_spec(tmp_path, single: dict, **changes) -> Path:
    """A spec of UNet-multi, UNet-single (with ``single``'s own keys) and copy at fraction 1."""
    return write_spec(tmp_path, fractions=[1.0], **changes,
                      methods={"UNet-multi": {"recipe": "unet.yaml"},
                               "UNet-single": {"recipe": "unet.yaml", "overrides": ["method.params.mode=single"],
                                               **single},
                               "copy": {"recipe": "copy.yaml"}})


def test_seeds_multiply_trainable_cells_and_tables_average_each_volume_over_them(tmp_path):
    from dafnet.experiment.tables import build_tables

    spec, base = load_spec(_unet_rows_spec(tmp_path, {"seeds": [5]}, seeds=[0, 1], folds=[0]))
    cells, reference = expand(spec, base)
    ids = sorted(c.id for c in cells)
    assert ids == ["UNet-multi__expert__f100__fold0__all-terms__seed0",
                   "UNet-multi__expert__f100__fold0__all-terms__seed1",
                   "UNet-single__expert__f100__fold0__all-terms__seed5", "copy__expert__fany__fold0__all-terms"]
    assert {c.seed: c.recipe.train.seed for c in cells if c.method == "UNet-multi"} == {0: 0, 1: 1}
    results = {c.id: {"single": {"s1": 40.0 + 10 * (c.seed or 0), "s2": 60.0}} for c in cells}
    table = build_tables(spec, cells, reference, results)[0]
    rows = dict(table.rows)
    assert rows["UNet-multi"][0].values == {"0:s1": 45.0, "0:s2": 60.0}  # mean of seeds 0 and 1
    assert rows["UNet-single"][0].values == {"0:s1": 90.0, "0:s2": 60.0}
    assert rows["copy"][0].values == {"0:s1": 40.0, "0:s2": 60.0}
    assert "averaged over its seeds: trainable methods [0, 1]; UNet-single [5]" in table.note


def test_a_method_may_run_fewer_folds_and_the_tables_say_so(tmp_path):
    from dafnet.experiment.tables import build_tables

    spec, base = load_spec(_unet_rows_spec(tmp_path, {"folds": [1]}, folds=[0, 1]))
    cells, reference = expand(spec, base)
    assert sorted(c.fold for c in cells if c.method == "UNet-single") == [1]
    assert sorted(c.fold for c in cells if c.method == "UNet-multi") == [0, 1]
    assert {c.recipe.data.split.fold for c in cells if c.method == "UNet-single"} == {1}
    results = {c.id: {"single": {"s1": 40.0, "s2": 60.0}} for c in cells}
    table = build_tables(spec, cells, reference, results)[0]
    rows = dict(table.rows)
    assert set(rows["UNet-single"][0].values) == {"1:s1", "1:s2"}
    assert set(rows["UNet-multi"][0].values) == {f"{f}:s{i}" for f in range(2) for i in (1, 2)}
    assert "rows with fewer folds, so fewer volumes: UNet-single [1]" in table.note
    assert "UNet-multi [" not in table.note


def test_wilcoxon_marks_clear_differences_only():
    a = {f"0:s{i}": 80.0 + i for i in range(10)}
    b = {k: v - 5.0 - 0.1 * i for i, (k, v) in enumerate(a.items())}
    assert wilcoxon_p(a, b) < 0.01
    assert np.isnan(wilcoxon_p(a, a))
    assert np.isnan(wilcoxon_p(a, {"0:other": 1.0}))


def test_shipped_specs_validate():
    for path in sorted((REPO / "recipes" / "experiments").glob("*.yaml")):
        spec, base = load_spec(path)
        assert spec.methods, path
    with pytest.raises(DafnetError, match="not found"):
        load_spec(REPO / "recipes" / "experiments" / "missing.yaml")


def test_a_copied_shipped_spec_still_finds_its_recipes(tmp_path, capsys):
    from dafnet.cli import main

    with pytest.raises(SystemExit):
        main(["recipes", "cp", "experiments/phantom_quick", str(tmp_path / "mine.yaml")])
    with pytest.raises(SystemExit) as exc:
        main(["experiment", str(tmp_path / "mine.yaml"), "--out", str(tmp_path / "out"), "--dry-run"])
    assert not exc.value.code
    assert "copy__expert" in capsys.readouterr().out


def test_a_spec_is_not_taken_for_a_recipe(capsys):
    from dafnet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["validate", "experiments/phantom_quick"])
    assert exc.value.code == 2
    assert "experiment spec" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("jobs", [1, 2])
def test_evaluate_from_reuses_the_trained_cells_with_other_weightless_choices(tmp_path, jobs):
    from dafnet.evaluation import evaluate

    (tmp_path / "dafnet.yaml").write_text(yaml.safe_dump(dict(TINY_DAFNET, output={"tensorboard": False,
                                                                                "figures": False})))
    spec = {"name": "variants", "fractions": [1.0], "folds": [0, 1], "reference": "DAFNet",
            "methods": {"DAFNet": {"recipe": "dafnet.yaml", "predictions": ["fused", "single"]},
                        "DAFNet-mean": {"evaluate_from": "DAFNet", "overrides": ["model.fuser.name=mean"],
                                        "predictions": ["fused", "single"]}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "out"
    actions = run_experiment(path, out=out, console=QUIET, jobs=jobs)["actions"]
    for fold in (0, 1):
        source, mean = (f"{m}__expert__f100__fold{fold}__all-terms" for m in ("DAFNet", "DAFNet-mean"))
        assert (actions[source], actions[mean]) == ("trained", "evaluated")
        cells = out / "cells"
        assert not (cells / mean / "export").exists() and not (cells / mean / "state").exists()
        trained, evaluated = (json.loads((cells / c / "per_volume.json").read_text())["dice"] for c in (source, mean))
        assert evaluated["single"] == trained["single"]  # the same weights: only the fused prediction changes
        summary = json.loads((cells / mean / "summary.json").read_text())
        assert summary["weights"]["cell"] == source and summary["weights"]["overrides"] == ["model.fuser.name=mean"]
        assert yaml.safe_load((cells / mean / "recipe.yaml").read_text())["model"]["fuser"]["name"] == "mean"
        # the same numbers as `dafnet evaluate RUN model.fuser.name=mean` (the metrics' own Dice code)
        direct = evaluate(cells / source, ["dice"], out_dir=tmp_path / f"direct{fold}", device="cpu",
                          overrides=["model.fuser.name=mean"])
        assert np.mean(list(evaluated["fused"].values())) == pytest.approx(direct.metrics["dice"]["dice_fused_mean"],
                                                                          abs=1e-6)
    rows = {r["row"] for r in csv.DictReader((out / "table_I.csv").open())}
    assert {"DAFNet (fused)", "DAFNet-mean (fused)", "DAFNet-mean (single)"} <= rows


@pytest.mark.parametrize("methods, needle", [
    ({"A": {"recipe": "unet.yaml"}, "B": {"evaluate_from": "C"}}, "evaluate_from"),
    ({"A": {"recipe": "unet.yaml"}, "B": {"recipe": "unet.yaml", "evaluate_from": "A"}}, "either recipe"),
    ({"A": {"recipe": "unet.yaml"}, "B": {"evaluate_from": "A", "seeds": [1]}}, "takes the seeds"),
    ({"A": {"recipe": "unet.yaml"}, "B": {"evaluate_from": "A", "folds": [0]}}, "takes the folds"),
    ({"A": {"recipe": "unet.yaml", "folds": [3]}}, "methods.A.folds: [3] must be distinct folds of the spec's"),
    ({"A": {"recipe": "unet.yaml"}, "B": {"evaluate_from": "A"}, "C": {"evaluate_from": "B"}}, "evaluate_from"),
    ({"A": {"recipe": "unet.yaml"}, "B": {"evaluate_from": "A", "overrides": ["train.lr=0.1"]}},
     "train.lr: cannot be overridden when evaluating trained weights"),
    ({"A": {"recipe": "unet.yaml"}, "B": {"evaluate_from": "A", "overrides": ["method.params.base_filters=8"]}},
     "methods.B.overrides ['method.params.base_filters=8'] change the networks ['unet'] of A's trained cells"),
    ({"A": {"recipe": "unet.yaml", "predictions": ["fusedd"]}}, "methods.A.predictions: 'fusedd' is not a prediction"),
])
def test_bad_evaluate_from_exits_2(tmp_path, capsys, methods, needle):
    from dafnet.cli import main

    spec = write_spec(tmp_path, methods=methods, reference="A")
    with pytest.raises(SystemExit) as exc:
        main(["experiment", str(spec), "--dry-run"])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert needle in " ".join((captured.out + captured.err).split())


def test_a_cell_that_fails_a_health_check_is_marked_failed_not_averaged(tmp_path, capsys):
    from dafnet.cli import main

    stuck = ["train.epochs=2", "train.lr=1e-12", "train.health.grace_epochs=0", "train.health.loss_window_epochs=1",
             "train.health.loss_min_fall=0.9"]  # a U-Net that cannot learn: its loss cannot fall by 90%
    spec = write_spec(tmp_path, fractions=[1.0], folds=[0],
                      methods={"UNet-multi": {"recipe": "unet.yaml"},
                               "UNet-stuck": {"recipe": "unet.yaml", "overrides": stuck},
                               "copy": {"recipe": "copy.yaml"}})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["experiment", str(spec), "--out", str(out)])
    assert exc.value.code == 2
    cell = "UNet-stuck__expert__f100__fold0__all-terms"
    assert f"1 cell(s) failed: {cell}" in " ".join(capsys.readouterr().err.split())
    failed = json.loads((out / "cells" / cell / "failed.json").read_text())
    assert failed["check"] == "loss_not_falling" and failed["epoch"] == 2
    assert not (out / "cells" / cell / "export").exists() and not (out / "cells" / cell / "per_volume.json").exists()
    text = (out / "tables.md").read_text()
    assert "| UNet-stuck | - | n/a |" in text
    assert f"- {cell}: loss_not_falling at epoch 2: training health check" in text
    rows = {r["row"]: r for r in csv.DictReader((out / "table_I.csv").open())}
    assert rows["UNet-stuck"]["volumes"] == "0" and rows["UNet-multi"]["volumes"] != "0"


def test_tables_compare_every_row_with_copy_and_count_seeds(tmp_path):
    from dafnet.experiment.tables import build_tables

    spec_path = write_spec(tmp_path, seeds=[0, 1], fractions=[1.0], folds=[0])
    spec, base = load_spec(spec_path)
    cells, reference = expand(spec, base)
    volumes = [f"s{i}" for i in range(8)]
    copy = {v: 50.0 + i for i, v in enumerate(volumes)}
    offsets = {"UNet-multi": 20.0, "UNet-single": -0.5}
    results = {c.id: {"single": {v: copy[v] + (offsets[c.method] if c.method in offsets else 0.0)
                                 + (0.3 * i if c.method == "UNet-single" else 0.0)
                                 for i, v in enumerate(volumes)}} for c in cells}
    results["UNet-single__expert__f100__fold0__all-terms__seed1"] = None  # one seed unfinished
    table = build_tables(spec, cells, reference, results)[0]
    rows = dict(table.rows)
    multi, single, copied = rows["UNet-multi"][0], rows["UNet-single"][0], rows["copy"][0]
    assert (multi.above_copy, multi.copy_volumes, multi.seeds) == (8, 8, 2)
    assert multi.copy_p_value < 0.05 and "(8/8 > copy, p 0.0078)" in multi.text()
    # -0.5 + 0.3 i: volumes 2..7 are above copy
    assert (single.above_copy, single.copy_volumes, single.seeds) == (6, 8, 1)
    assert copied.above_copy is None and copied.seeds == 1 and "> copy" not in copied.text()
    markdown = table.markdown()
    assert "| Method | Seeds | 100% |" in markdown and "| UNet-single | 1 |" in markdown and "| copy | 1 |" in markdown
    table.write_csv(tmp_path / "t.csv")
    by = {r["row"]: r for r in csv.DictReader((tmp_path / "t.csv").open())}
    assert (by["UNet-multi"]["volumes_above_copy"], by["UNet-multi"]["volumes_vs_copy"], by["UNet-multi"]["seeds"]) == \
        ("8", "8", "2")
    assert float(by["UNet-multi"]["p_value_vs_copy"]) == pytest.approx(multi.copy_p_value, abs=1e-4)
    assert by["copy"]["p_value_vs_copy"] == "" and by["copy"]["volumes_above_copy"] == ""


def test_an_unreadable_failed_json_is_still_listed_as_failed(tmp_path):
    from dafnet.experiment.runner import read_failure

    (tmp_path / "failed.json").write_text('{"error": "cut sh')
    assert read_failure(tmp_path).startswith(f"failed ({tmp_path / 'failed.json'} cannot be read")
    (tmp_path / "failed.json").write_text("[]")
    assert read_failure(tmp_path) == f"failed ({tmp_path / 'failed.json'} holds no record)"
    (tmp_path / "failed.json").write_text(json.dumps({"error": "boom", "check": "dice_floor", "epoch": 12}))
    assert read_failure(tmp_path) == "dice_floor at epoch 12: boom"


def test_a_cell_whose_validation_declined_late_is_listed_under_the_tables(grid, tmp_path):
    from dafnet.experiment.runner import read_decline

    spec, out, _ = grid
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    cell = copy / "cells" / "UNet-multi__expert__f100__fold0__all-terms"
    summary = json.loads((cell / "summary.json").read_text())
    assert read_decline(cell) is None  # nothing recorded: no line
    summary["validation_decline"] = {"best_epoch": 3, "best_monitor": 0.2, "last_epoch": 9, "last_monitor": 0.35}
    (cell / "summary.json").write_text(json.dumps(summary))
    run_experiment(spec, out=copy, console=QUIET, tables_only=True)
    text = (copy / "tables.md").read_text()
    assert "Cells whose validation declined late" in text
    assert "- UNet-multi__expert__f100__fold0__all-terms: validation monitor 0.2 at epoch 3, 0.35 at epoch 9" in text
    (cell / "summary.json").write_text("{cut")
    assert read_decline(cell) is None
