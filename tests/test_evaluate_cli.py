"""`dafnet evaluate` end to end on a tiny phantom run trained here, and its user errors (exit 2)."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
from _toys import TINY_DAFNET
from rich.console import Console

from dafnet.cli.app import main
from dafnet.config.resolve import parse_recipe, resolve
from dafnet.engine import train

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
    report = json.loads((run / "evaluation" / "all__dice__pairing=shuffled" / "metrics.json").read_text())
    assert len(report["info"]["subjects"]) == 6 and report["info"]["pairing"] == "shuffled"


def test_each_call_gets_its_own_folder_and_an_existing_one_is_refused(run, capsys):
    plain = run / "evaluation" / "validation__dice"
    mean = run / "evaluation" / "validation__dice+alignment__model.fuser.name=mean"
    assert cli(["evaluate", str(run), "--metric", "dice", "--split", "validation", "--cpu"]) == 0, capsys.readouterr()
    assert cli(["evaluate", str(run), "model.fuser.name=mean", "--metric", "dice", "--metric", "alignment",
                "--split", "validation", "--cpu"]) == 0, capsys.readouterr()
    assert str(mean / "metrics.json") in capsys.readouterr().out
    first, second = (json.loads((f / "metrics.json").read_text()) for f in (plain, mean))
    assert list(first["metrics"]) == ["dice"] and first["info"]["overrides"] == []
    assert list(second["metrics"]) == ["dice", "alignment"] and second["info"]["overrides"] == ["model.fuser.name=mean"]
    before = (plain / "metrics.json").read_bytes()
    assert cli(["evaluate", str(run), "--metric", "dice", "--split", "validation", "--cpu"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{plain} exists and is not empty" in err and "--overwrite" in err and "--out" in err
    assert (plain / "metrics.json").read_bytes() == before  # untouched
    assert not [p.name for p in (run / "evaluation").iterdir() if p.name.startswith(".")]  # no staging left


def test_overwrite_replaces_the_whole_folder_and_out_is_refused_without_it(run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert cli(["evaluate", str(run), "--metric", "figures", "--out", str(out), "--cpu"]) == 0, capsys.readouterr()
    assert sorted(p.name for p in out.glob("*.png"))  # the figures of the first call
    assert cli(["evaluate", str(run), "--metric", "dice", "--out", str(out), "--cpu"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{out} exists and is not empty" in err and "pass --overwrite" in err
    assert cli(["evaluate", str(run), "--metric", "dice", "--out", str(out), "--overwrite", "--cpu"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_volume.csv"]  # no stale figure
    report = json.loads((out / "metrics.json").read_text())
    assert list(report["metrics"]) == ["dice"] and report["files"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no staging or old copy left beside it


@pytest.mark.parametrize("target", ["run", "evaluations"])
def test_overwrite_never_replaces_a_folder_that_is_not_one_evaluation(run, tmp_path, capsys, target):
    folder = run if target == "run" else tmp_path / "evaluations"
    if target == "evaluations":  # a folder of evaluations, with the old layout's metrics.json on top
        (folder / "one").mkdir(parents=True)
        (folder / "one" / "metrics.json").write_text("{}")
        (folder / "metrics.json").write_text("{}")
    before = sorted(p.name for p in folder.iterdir())
    assert cli(["evaluate", str(run), "--metric", "dice", "--out", str(folder), "--overwrite", "--cpu"]) == 2
    assert "not one evaluation's folder" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in folder.iterdir()) == before


def test_an_error_while_evaluating_leaves_nothing(run, tmp_path, monkeypatch):
    import dafnet.evaluation as evaluation
    import dafnet.evaluation.driver as driver

    def broken(path, rows):
        raise RuntimeError("disk full")

    monkeypatch.setattr(driver, "write_csv", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        evaluation.evaluate(run, ["dice", "figures"], out_dir=tmp_path / "new" / "eval", device="cpu")
    assert list(tmp_path.iterdir()) == []  # no staging folder, no half-written output, no parent made for it


def test_folder_names_are_readable_safe_and_deterministic():
    from dafnet.evaluation import evaluation_folder_name as name

    mean = name(["dice", "alignment"], "test", ["model.fuser.name=mean"])
    assert mean == "test__dice+alignment__model.fuser.name=mean"
    assert name(["dice", "dice"], "all", pairing="shuffled") == "all__dice__pairing=shuffled"
    assert name(["dcor"], metric_options=["dcor.max_samples=5"]) == "test__dcor__dcor.max_samples=5"
    odd = name(["dice"], overrides=["model.x.params.filters=[4, 8]", "model.y.name=a/b"])
    assert odd == name(["dice"], overrides=["model.x.params.filters=[4, 8]", "model.y.name=a/b"])  # deterministic
    assert odd != name(["dice"], overrides=["model.x.params.filters=[4,8]", "model.y.name=a/b"])  # hashed, distinct
    assert re.fullmatch(r"[A-Za-z0-9._=+,-]+", odd) and odd.startswith("test__dice__model.x.params.filters=4,8-")
    long = name(["dice"], overrides=[f"model.fuser.params.p{i}=1" for i in range(20)])
    assert len(long) <= 160 and re.fullmatch(r"[A-Za-z0-9._=+,-]+", long)
    assert name(["dice"], overrides=["model.a=" + "x" * 100]) != name(["dice"], overrides=["model.a=" + "x" * 101])
    data = name(["dice"], data="/some/where/nnunet.yaml")
    assert re.fullmatch(r"test__dice__data=nnunet-[0-9a-f]{8}", data)
    assert data != name(["dice"], data="/else/where/nnunet.yaml")


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
    assert mean.context.components["fuser"].name == "mean"
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
