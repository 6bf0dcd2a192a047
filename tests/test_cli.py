"""The command line: help panels, exit codes, messages, recipe/plugin/registry commands."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _cli import run_cli as run
from _toys import ToyDecoder

from dafnet.cli import main


@pytest.fixture
def toys():
    import _toys

    _toys.register_toys()
    return _toys


def test_help_lists_commands_in_panels(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for panel in ("Run", "Components and recipes", "Data"):
        assert panel in out
    for command in ("train", "validate", "summary", "plugins", "recipes", "data"):
        assert command in out


def test_help_does_not_import_torch():
    code = textwrap.dedent("""
        import sys
        from dafnet.cli import main
        for args in (["--help"], ["train", "--help"], ["plugins", "--help"]):
            try:
                main(args)
            except SystemExit:
                pass
        assert "torch" not in sys.modules, "torch imported by --help"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_python_dash_m_works():
    res = subprocess.run([sys.executable, "-m", "dafnet", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "dafnet" in res.stdout


def test_validate_prints_resolved_recipe(tmp_path, capsys, toys):
    path = tmp_path / "r.yaml"
    path.write_text(toys.TOY_RECIPE)
    code, out, _ = run(capsys, "validate", str(path), "train.epochs=3")
    assert code == 0
    assert "epochs: 3" in out and "batch_size: 6" in out and "recipe is valid" in out


def test_validate_errors_exit_2_with_every_problem(tmp_path, capsys, toys):
    path = tmp_path / "r.yaml"
    path.write_text(toys.TOY_RECIPE.replace("channels: 4", "channels: 0, colour: red"))
    code, out, err = run(capsys, "validate", str(path), "train.epocs=3")
    assert code == 2
    assert "Traceback" not in err + out
    for key in ("model.decoder.params.channels", "model.decoder.params.colour", "train.epocs"):
        assert key in err


def tiny_nnunet_recipe(tmp_path, image_size: int) -> Path:
    """A tiny DAFNet recipe on an nnU-Net folder that is not on this machine."""
    import yaml
    from _toys import TINY_DAFNET

    recipe = {**TINY_DAFNET, "data": {"source": {"name": "nnunet", "params": {
        "root": str(tmp_path / "not_here"), "channels": ["cine", "lge"], "image_size": image_size}},
        "modalities": ["cine", "lge"]}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_validate_builds_the_components_as_train_would(tmp_path, capsys):
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    code, out, err = run(capsys, "validate", quickstart, "data.source.params.image_size=36")
    flat = " ".join(err.split())
    assert code == 2 and "recipe is valid" not in out, out + err
    assert "model.anatomy_encoder" in flat and "36x36" in flat and "not divisible" in flat
    assert "building its components" in flat and "Traceback" not in out + err
    # without the data (an nnU-Net folder not on this machine), from the facts the recipe states
    code, out, err = run(capsys, "validate", tiny_nnunet_recipe(tmp_path, 34))
    assert code == 2 and "34x34" in err and "model.anatomy_encoder" in err, out + err
    code, out, err = run(capsys, "validate", tiny_nnunet_recipe(tmp_path, 32))
    flat = " ".join(out.split())
    assert code == 0 and "recipe is valid" in flat, out + err
    assert "note: the data source could not be opened here" in flat and "built for 1 class" in flat


class BrokenDecoder(ToyDecoder):
    def __init__(self, params, facts):
        super().__init__(params, facts)
        raise ValueError("channels must be even")


def test_validate_reports_a_component_that_fails_to_build_at_its_key(tmp_path, capsys, toys):
    from dafnet.registry import register

    register("decoder", "broken_decoder", BrokenDecoder)
    path = tmp_path / "r.yaml"
    path.write_text(toys.TOY_RECIPE)
    code, out, _ = run(capsys, "validate", path)
    assert code == 0 and "recipe is valid (its components build)" in " ".join(out.split())
    code, out, err = run(capsys, "validate", path, "model.decoder=broken_decoder")
    assert code == 2 and "│ model.decoder " in err and "ValueError" in err and "recipe is valid" not in out, err
    from dafnet.assemble import check_build
    from dafnet.config import RecipeError, load_recipe

    with pytest.raises(RecipeError) as exc:
        check_build(load_recipe(path, ["model.decoder=broken_decoder"]))
    [issue] = exc.value.issues
    assert issue.path == "model.decoder" and "failed to build: ValueError: channels must be even" in issue.message


def test_unknown_component_error_names_alternatives(tmp_path, capsys, toys):
    path = tmp_path / "r.yaml"
    path.write_text(toys.TOY_RECIPE)
    code, _, err = run(capsys, "validate", str(path), "model.decoder=spaed")
    assert code == 2
    assert "did you mean 'spade'" in err
    assert "film" in err


def test_missing_recipe_file(capsys):
    code, _, err = run(capsys, "validate", "no/such/recipe.yaml")
    assert code == 2 and "recipe not found" in err


def test_debug_shows_traceback(capsys):
    from dafnet.errors import DafnetError

    with pytest.raises(DafnetError):
        main(["--debug", "validate", "no/such/recipe.yaml"])


def test_summary_of_toy_method(tmp_path, capsys, toys):
    path = tmp_path / "r.yaml"
    path.write_text(toys.TOY_RECIPE)
    code, out, _ = run(capsys, "summary", str(path))
    assert code == 0
    assert "decoder" in out and "toy_decoder" in out and "total" in out


def test_plugins_list_and_info(capsys, toys):
    code, out, _ = run(capsys, "plugins", "list")
    assert code == 0
    for title in ("anatomy encoder", "modality encoder", "aligner", "fuser", "decoder", "segmentor",
                  "discriminator", "pairing head", "loss", "metric", "data source", "method"):
        assert title in out
    assert "built-in" in out and "runtime" in out
    code, out, _ = run(capsys, "plugins", "info", "toy_decoder")
    assert code == 0 and "channels" in out and "hidden channels" in out
    code, _, err = run(capsys, "plugins", "info", "toy_decodr")
    assert code == 2 and "did you mean 'toy_decoder'" in err.replace("'other_decoder' or ", "")
    code, _, err = run(capsys, "plugins", "list", "--kind", "decodr")
    assert code == 2 and "unknown kind" in err


def test_recipes_list_and_cp(tmp_path, capsys):
    code, out, _ = run(capsys, "recipes", "list")
    assert code == 0 and "quickstart" in out
    code, out, _ = run(capsys, "recipes", "cp", "quickstart", str(tmp_path))
    assert code == 0 and (tmp_path / "quickstart.yaml").exists()
    code, _, err = run(capsys, "recipes", "cp", "quickstart", str(tmp_path))
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, "recipes", "cp", "nope", str(tmp_path))
    assert code == 2 and "quickstart" in err
    code, _, _ = run(capsys, "recipes", "cp", "quickstart", str(tmp_path / "new") + "/")  # a folder to make
    assert code == 0 and (tmp_path / "new" / "quickstart.yaml").is_file()


def test_usage_error_exit_2(capsys):
    code, _, _ = run(capsys, "validate")
    assert code == 2


def test_warnings_print_as_one_plain_line(capsys):
    import warnings

    from dafnet.cli.app import _plain_warnings

    _plain_warnings()  # as main() does without --debug (pytest restores the hook after the test)
    warnings.warn("case_7 has an odd spacing [1, 1, 9]", UserWarning, stacklevel=1)
    out = capsys.readouterr().out
    assert "warning: case_7 has an odd spacing [1, 1, 9]" in out and "UserWarning" not in out and ".py:" not in out


def _all_commands():
    """(args before --help) of the root and of every command and sub-command."""
    import typer.main

    from dafnet.cli.app import app

    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, path + [name])

    return list(walk(typer.main.get_command(app), []))


def test_help_shows_flags_without_a_type(capsys):
    code, out, _ = run(capsys, "experiment", "--help")
    assert code == 0 and "--dry-run" in out and "--tables-only" in out
    commands = _all_commands()
    assert ["evaluate"] in commands and ["plugins", "list"] in commands
    for path in commands:
        code, out, _ = run(capsys, *path, "--help")
        assert code == 0 and "--help" in out
        assert "<bool>" not in out, f"dafnet {' '.join(path)} --help shows a flag's type"
    code, out, _ = run(capsys, "evaluate", "--help")
    assert "<path>" in out and "<list[str]>" in out  # options that take a value keep theirs


def test_piped_training_prints_a_line_per_epoch_and_whole_tables(tmp_path):
    """stdout to a pipe (a log file, nohup, CI): no live display, one plain line per epoch, and
    the final table and paths as wide as they are (rich alone would cut them at 80 columns)."""
    import os
    import re
    from pathlib import Path

    import yaml
    from _toys import TINY_DAFNET

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_DAFNET, "train": {**TINY_DAFNET["train"], "epochs": 3},
                                      "output": {"tensorboard": False, "figures": False}}))
    run_dir = tmp_path / "a_folder_name_long_enough_that_the_paths_line_is_over_80_columns" / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    repo = str(Path(__file__).resolve().parents[1])
    env.update(PYTHONPATH=os.pathsep.join([repo, env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               PYTHONIOENCODING="utf-8")
    res = subprocess.run([sys.executable, "-m", "dafnet", "train", str(recipe), "--run-dir", str(run_dir)],
                         capture_output=True, env=env, timeout=300)
    out = res.stdout.decode("utf-8")
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    lines = out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 3, out
    for i, line in enumerate(epochs, 1):
        assert re.fullmatch(rf"epoch {i}/3  labelled/generator \S+ \(sup \S+\)  unlabelled/generator \S+ \(sup \S+\)"
                            r"  val dice_fused \d+\.\d\d  monitor \d\.\d{4}  \d+\.\d s", line), line
    header = r"┃ prediction +┃ paper Dice \(mean ± std over volumes\) ┃ 3D Dice \(per class, mean\) ┃"
    assert any(re.fullmatch(header, line) for line in lines), out
    assert any(line.startswith("│ aligned_copy ") for line in lines), out  # the references' rows, whole
    paths = next(line for line in lines if line.startswith("run: "))
    assert f"export: {run_dir / 'export'}" in paths and len(paths) > 80
    assert "…" not in out and "\x1b[" not in out  # nothing cut, no escape codes


def test_consoles_are_wide_and_training_plain_only_when_not_a_terminal(monkeypatch):
    import io

    from rich.console import Console

    from dafnet.console import WIDE, make_console
    from dafnet.engine.progress import EpochLines, LiveBars, training_display

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("COLUMNS", raising=False)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    assert make_console(file=io.StringIO()).width == WIDE
    assert make_console(file=io.StringIO(), width=90).width == 90
    assert make_console(file=Terminal()).width != WIDE  # a terminal keeps its own width
    monkeypatch.setenv("COLUMNS", "120")
    assert make_console(file=io.StringIO()).width == 120  # COLUMNS, when set, is respected
    assert isinstance(training_display(Console(file=Terminal()), True, 3, 0, 2), LiveBars)
    piped = io.StringIO()
    with training_display(Console(file=piped), True, 3, 0, 2) as display:
        assert isinstance(display, EpochLines)
        display.start_epoch(2)
        display.advance(2, {"labelled/unet/total": 0.5})
        display.end_epoch({"epoch": 1, "labelled/unet/total": 0.5, "labelled/unet/ce": 0.25, "seconds": 1.5})
    assert piped.getvalue() == "epoch 1/3  labelled/unet 0.5  1.5 s\n"  # no health signals: every phase's total
