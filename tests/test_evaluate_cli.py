"""`dafnet evaluate` end to end on a tiny phantom run trained here, and its user errors (exit 2)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from rich.console import Console

from dafnet.cli.app import main
from dafnet.config.resolve import parse_recipe, resolve
from dafnet.engine import train

from _toys import TINY_DAFNET

RECIPE = TINY_DAFNET


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluate") / "run"
    train(resolve(parse_recipe(RECIPE)), run_dir=root, console=Console(quiet=True))
    yield root
    torch.set_num_threads(threads)


def cli(args) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_evaluate_writes_metrics_csv_and_figures(run, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli(["evaluate", str(run / "export"), "--metric", "dice", "--metric", "dcor", "--metric", "figures",
                "--out", str(out), "--cpu"])
    assert code == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "dice_fused_mean" in printed and "dcor_s_z" in printed
    report = json.loads((out / "metrics.json").read_text())
    splits = json.loads((run / "splits.json").read_text())
    assert report["info"]["subjects"] == splits["test"] and report["info"]["splits_from"].endswith("splits.json")
    assert report["info"]["samples"] == 3 * len(splits["test"]) and report["info"]["samples_per_second"] > 0
    dice = report["metrics"]["dice"]
    for kind in ("single", "deformed", "fused"):
        assert 0.0 <= dice[f"dice_{kind}_mean"] <= 100.0
        assert f"dice3d_{kind}_foreground_mean" in dice
    dcor = report["metrics"]["dcor"]
    assert dcor["n"] == 2 * 3 * len(splits["test"])  # both modalities' slices
    assert {"dcor_s_z", "dcor_u_sqr_s_z", "dcor_image_s", "dcor_image_z"} <= set(dcor)
    with open(out / "per_volume.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == splits["test"] and "dice_fused" in rows[0]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["alignment.png", "anatomy_channels.png", "reconstruction.png", "segmentation.png"]
    assert all((out / p).stat().st_size > 1000 for p in pngs)


def test_alignment_metric_writes_the_error_against_the_truth(run, tmp_path, capsys):
    out = tmp_path / "alignment"
    code = cli(["evaluate", str(run), "--metric", "alignment", "--split", "all", "--out", str(out), "--cpu"])
    assert code == 0, capsys.readouterr()
    numbers = json.loads((out / "metrics.json").read_text())["metrics"]["alignment"]
    assert numbers["alignment_pixels"] > 0
    for key in ("align_median_mm", "align_p95_mm", "identity_median_mm", "identity_p95_mm"):
        assert 0.0 < numbers[key] < 60.0  # mm: the phantom's stacks differ by up to 8 mm shifts, 10 degrees
    assert numbers["align_median_mm"] <= numbers["align_p95_mm"]
    with open(out / "per_volume.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(float(r["identity_median_mm"]) > 0 for r in rows)
    assert (out / "alignment_error.png").stat().st_size > 1000


def test_alignment_is_na_with_a_note_when_the_data_have_no_coordinates(run, tmp_path, capsys):
    from dafnet.data.phantom import PhantomDataSource, write_phantom

    phantom = RECIPE["data"]["source"]["params"]
    raw = write_phantom(tmp_path / "raw", PhantomDataSource.Params(**phantom))
    recipe = tmp_path / "nnunet.yaml"
    recipe.write_text(json.dumps({"name": "nnunet", "data": {
        "source": {"name": "nnunet", "params": {"root": str(raw), "image_size": 32}}}}))
    out = tmp_path / "na"
    code = cli(["evaluate", str(run), "--metric", "alignment", "--data", str(recipe), "--split", "all",
                "--out", str(out), "--cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured
    report = json.loads((out / "metrics.json").read_text())
    assert report["metrics"]["alignment"] == {"alignment_pixels": 0.0}
    assert "n/a" in report["info"]["notes"]["alignment"][0] and "n/a" in captured.out


def test_log_has_the_alignment_columns(run):
    with open(run / "log.csv", newline="") as f:
        row = next(csv.DictReader(f))
    for key in ("align_median_mm", "align_p95_mm", "identity_median_mm", "identity_p95_mm"):
        assert float(row[f"validation/{key}"]) > 0


def test_default_output_folder_all_split_and_shuffled_pairing(run, capsys):
    code = cli(["evaluate", str(run), "--metric", "dice", "--split", "all", "--pairing", "shuffled", "--cpu"])
    assert code == 0, capsys.readouterr()
    report = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert len(report["info"]["subjects"]) == 6 and report["info"]["pairing"] == "shuffled"


def test_metric_params_are_set_validated_and_recorded(run, tmp_path, capsys):
    out = tmp_path / "sampled"
    code = cli(["evaluate", str(run), "--metric", "dcor", "--metric-param", "dcor.max_samples=5",
                "--out", str(out), "--cpu"])
    assert code == 0, capsys.readouterr()
    report = json.loads((out / "metrics.json").read_text())
    assert report["metrics"]["dcor"]["n"] == 5  # the subsample the parameter asked for
    assert report["info"]["metric_params"]["dcor"]["max_samples"] == 5


@pytest.mark.parametrize("args, message", [
    (["--metric", "dcor", "--metric-param", "dcor.max_sample=5"], "did you mean 'max_samples'"),
    (["--metric", "dcor", "--metric-param", "dcor.max_samples=-1"], "--metric-param dcor.max_samples"),
    (["--metric", "dice", "--metric-param", "dcor.max_samples=5"], "is not one of the --metric names"),
    (["--metric", "dice", "--metric-param", "max_samples=5"], "is not NAME.KEY=VALUE"),
    (["--metric", "dcorr"], "did you mean 'dcor'"),
    (["--metric", "dice", "--data", "."], "does not read a dataset folder"),
    (["--metric", "dice", "--split", "train"], "unknown --split"),
])
def test_user_errors_exit_2(run, capsys, args, message):
    assert cli(["evaluate", str(run)] + args) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_missing_export_exits_2(tmp_path, capsys):
    assert cli(["evaluate", str(tmp_path / "nothing"), "--metric", "dice"]) == 2
    assert "no export" in capsys.readouterr().err


def test_overrides_change_choices_without_weights(run, tmp_path, capsys):
    from dafnet.components.fusers import MaxFuser, MeanFuser
    from dafnet.engine import load_export

    out = tmp_path / "mean"
    code = cli(["evaluate", str(run), "model.fuser.name=mean", "--metric", "dice", "--out", str(out), "--cpu"])
    assert code == 0, capsys.readouterr()
    assert json.loads((out / "metrics.json").read_text())["info"]["overrides"] == ["model.fuser.name=mean"]
    plain, mean = load_export(run), load_export(run, overrides=["model.fuser.name=mean"])
    assert isinstance(plain.fuser, MaxFuser) and isinstance(mean.fuser, MeanFuser)
    assert mean.recipe.model["fuser"].name == "mean"
    for role, net in plain.networks().items():  # the same weights, only the fuser differs
        theirs = mean.networks()[role].state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("override, message", [
    ("model.aligner.name=affine", "only choices without weights"),
    ("model.fuser.name=nope", "unknown fuser 'nope'"),
    ("modelfuser", "is not key=value"),
    ("train.lr=0.1", "│ train.lr │ cannot be"),  # accepted, it would change nothing
    ("losses.sup=0", "│ losses.sup │ cannot be"),
    ("data.split.fold=1", "│ data.split.fold │ cannot be"),
])
def test_override_errors_exit_2(run, tmp_path, capsys, override, message):
    out = tmp_path / "never"
    assert cli(["evaluate", str(run), override, "--metric", "dice", "--out", str(out), "--cpu"]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not out.exists()
