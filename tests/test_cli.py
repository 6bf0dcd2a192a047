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
