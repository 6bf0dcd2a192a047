"""Plugin discovery with real installed distributions, each in a fresh interpreter.

The example plugin (plugins/dafnet-example-decoder) is pip-installed once into a
temporary folder (never into the main environment) and put on PYTHONPATH of a
subprocess. Other tiny distributions (broken, duplicate, not-a-decoder) are written
as installed ``*.dist-info`` folders, exactly what importlib.metadata reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "dafnet-example-decoder"
PLUGIN_ORIGIN = "dafnet-example-decoder 0.1.0"
PLUGIN_TARGET = "dafnet_example_decoder.decoder:ResidualFiLMDecoder"
QUICKSTART = REPO / "recipes" / "quickstart.yaml"

# Narrow widths so building (and training) the whole model takes seconds on a CPU.
TINY_MODEL = [
    "model.decoder=residual_film",
    "model.decoder.params.width=4",
    "model.decoder.params.num_blocks=1",
    "model.decoder.params.film_hidden=4",
    "model.anatomy_encoder={name: unet_shared_decoder, params: {base_filters: 2}}",
    "model.modality_encoder={name: vae, params: {filters: [2, 2, 2, 2], dense_units: 4}}",
    "model.segmentor={name: conv_head, params: {filters: 4}}",
    "model.aligner={name: tps, params: {loc_filters: 2, hidden: 4}}",
    "model.discriminator={name: lsgan_conv, params: {filters: [2, 2, 2, 2]}}",
    "data.source.params.subjects=4",
    "data.source.params.slices=2",
]


# --------------------------------------------------------------------------- helpers
def write_distribution(root: Path, name: str, version: str, entry_points: dict[str, dict[str, str]],
                       modules: dict[str, str]) -> Path:
    """An installed distribution as a wheel leaves it: modules + ``<name>-<version>.dist-info``."""
    root.mkdir(parents=True, exist_ok=True)
    for filename, source in modules.items():
        (root / filename).write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def run_python(code: str, *paths: Path, disable_autoload: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DAFNET_DISABLE_PLUGIN_AUTOLOAD", "PYTHONPATH"}}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    env["COLUMNS"] = "200"
    if disable_autoload:
        env["DAFNET_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def run_cli(args: list[str], *paths: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    code = f"import sys; from dafnet.cli import main; sys.argv = ['dafnet', *{args!r}]; main()"
    return run_python(code, *paths)


def last_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """plugins/dafnet-example-decoder pip-installed into a temporary folder, offline."""
    base = tmp_path_factory.mktemp("plugin")
    source = base / "source"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(target.glob("dafnet_example_decoder-0.1.0.dist-info"))
    return target


@pytest.fixture
def broken_plugin(tmp_path) -> Path:
    return write_distribution(
        tmp_path / "broken", "dafnet-broken-plugin", "0.2.0",
        {"dafnet.decoder": {"broken": "dafnet_broken_plugin:BrokenDecoder"}},
        {"dafnet_broken_plugin.py": "raise ImportError(\"No module named 'fancy_ops'\")\n"},
    )


# --------------------------------------------------------------------------- discovery
def test_installed_plugin_is_listed_with_its_origin_without_importing_it(installed_plugin):
    proc = run_python("""
        import json, sys
        from dafnet.registry import registry
        entry = registry("decoder").entry("residual_film")
        print(json.dumps({"names": registry("decoder").names(), "origin": entry.origin,
                          "target": entry.target, "distribution": entry.distribution,
                          "plugin_imported": "dafnet_example_decoder" in sys.modules,
                          "torch_imported": "torch" in sys.modules}))
    """, installed_plugin)
    found = last_json(proc)
    assert "residual_film" in found["names"] and {"film", "spade"} <= set(found["names"])
    assert found["origin"] == PLUGIN_ORIGIN
    assert found["target"] == PLUGIN_TARGET
    assert found["distribution"] == "dafnet-example-decoder"
    assert found["plugin_imported"] is False, "listing must not import the plugin"
    assert found["torch_imported"] is False, "listing must not import torch"


def test_cli_lists_the_plugin(installed_plugin):
    proc = run_cli(["plugins", "list", "--kind", "decoder"], installed_plugin)
    assert proc.returncode == 0, proc.stderr
    line = next(li for li in proc.stdout.splitlines() if "residual_film" in li)
    assert PLUGIN_ORIGIN in line


def test_installed_plugin_loads_by_name_and_passes_the_contract(installed_plugin):
    proc = run_python("""
        import json
        from dafnet.registry import registry
        from dafnet.testing import check_component
        cls = registry("decoder").get("residual_film")
        report = check_component("decoder", "residual_film", {"width": 4, "num_blocks": 1, "film_hidden": 4})
        print(json.dumps({"module": cls.__module__, "target": report.target,
                          "shape": report.outputs["image"]}))
    """, installed_plugin)
    found = last_json(proc)
    assert found == {"module": "dafnet_example_decoder.decoder", "target": PLUGIN_TARGET,
                     "shape": [2, 1, 32, 32]}


def test_disabling_autoload_hides_installed_plugins(installed_plugin):
    proc = run_python("""
        import json
        from dafnet.registry import RegistryError, registry
        try:
            registry("decoder").get("residual_film")
            error = None
        except RegistryError as exc:
            error = str(exc)
        print(json.dumps({"names": registry("decoder").names(), "error": error}))
    """, installed_plugin, disable_autoload=True)
    found = last_json(proc)
    assert "residual_film" not in found["names"]
    assert {"film", "spade"} <= set(found["names"])
    assert "unknown decoder 'residual_film'" in found["error"]


def test_broken_plugin_lists_but_fails_naming_its_distribution_when_used(broken_plugin):
    proc = run_python("""
        import json
        from dafnet.registry import RegistryError, registry
        reg = registry("decoder")
        out = {"names": reg.names(), "origin": reg.entry("broken").origin}
        try:
            reg.get("broken")
        except RegistryError as exc:
            out["message"], out["hint"] = exc.message, exc.hint
        out["film_still_loads"] = reg.get("film").__name__
        print(json.dumps(out))
    """, broken_plugin)
    found = last_json(proc)
    assert "broken" in found["names"]
    assert found["origin"] == "dafnet-broken-plugin 0.2.0"
    assert "'dafnet-broken-plugin'" in found["message"]
    assert "failed to import" in found["message"] and "fancy_ops" in found["message"]
    assert "DAFNET_DISABLE_PLUGIN_AUTOLOAD=1" in found["hint"]
    assert found["film_still_loads"] == "FiLMDecoder"


def test_duplicate_names_are_an_error_naming_both_origins(installed_plugin, tmp_path):
    other = write_distribution(
        tmp_path / "other", "dafnet-other-decoders", "1.2.0",
        {"dafnet.decoder": {"residual_film": "dafnet_other_decoders:OtherDecoder"}},
        {"dafnet_other_decoders.py": "OtherDecoder = None\n"},
    )
    listing = run_cli(["plugins", "list", "--kind", "decoder"], installed_plugin, other)
    assert listing.returncode == 0, listing.stdout + listing.stderr  # the list still works, marking the name
    text = " ".join(listing.stdout.split())
    assert "contested" in text and "residual_film" in text and "dafnet-other-decoders 1.2.0" in text
    proc = run_cli(["plugins", "info", "residual_film"], installed_plugin, other)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # using the name is the error
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "duplicate decoder name 'residual_film'" in text
    assert PLUGIN_ORIGIN in text and "dafnet-other-decoders 1.2.0" in text
    assert PLUGIN_TARGET in text and "dafnet_other_decoders:OtherDecoder" in text
    assert run_cli(["plugins", "info", "film"], installed_plugin, other).returncode == 0  # the rest works


def test_plugin_reusing_a_builtin_name_is_an_error_naming_both(tmp_path):
    shadow = write_distribution(
        tmp_path / "shadow", "dafnet-shadow", "0.0.1",
        {"dafnet.decoder": {"film": "dafnet_shadow:Film"}}, {"dafnet_shadow.py": "Film = None\n"},
    )
    proc = run_python("""
        from dafnet.registry import registry
        assert registry("decoder").get("spade").__name__ == "SPADEDecoder"  # other names still load
        registry("decoder").get("film")
    """, shadow)
    assert proc.returncode != 0
    assert "duplicate decoder name 'film'" in proc.stderr
    assert "(built-in)" in proc.stderr and "dafnet-shadow 0.0.1" in proc.stderr


def test_entry_point_to_a_class_that_is_not_a_decoder_is_a_clear_error(tmp_path):
    wrong = write_distribution(
        tmp_path / "wrong", "dafnet-wrong-kind", "0.1.0",
        {"dafnet.decoder": {"not_a_decoder": "dafnet_wrong_kind:Segmenter"}},
        {"dafnet_wrong_kind.py": """
            from torch import nn
            class Segmenter(nn.Module):
                pass
        """},
    )
    proc = run_python("""
        import json
        from dafnet.registry import RegistryError, registry
        try:
            registry("decoder").get("not_a_decoder")
        except RegistryError as exc:
            print(json.dumps({"message": exc.message, "hint": exc.hint}))
    """, wrong)
    found = last_json(proc)
    assert "decoder 'not_a_decoder'" in found["message"]
    assert "dafnet-wrong-kind 0.1.0" in found["message"]
    assert "is not a subclass of dafnet.interfaces.networks.Decoder" in found["message"]
    assert "dafnet.interfaces.Decoder" in found["hint"]


# --------------------------------------------------------------------------- naming a class directly
@pytest.fixture
def plugin_source_only(monkeypatch):
    """The plugin importable but NOT installed (no entry point), discovery off."""
    monkeypatch.syspath_prepend(str(PLUGIN / "src"))
    monkeypatch.setenv("DAFNET_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_a_class_named_directly_builds_without_an_entry_point(plugin_source_only):
    from dafnet.builder import build
    from dafnet.testing import DEFAULT_FACTS

    decoder = build("decoder", PLUGIN_TARGET, {"width": 4, "num_blocks": 2}, DEFAULT_FACTS, "model.decoder")
    assert type(decoder).__name__ == "ResidualFiLMDecoder"
    assert decoder.params.width == 4 and len(decoder.blocks) == 2


def test_a_class_named_directly_must_subclass_the_abc(plugin_source_only):
    from dafnet.builder import build
    from dafnet.config.errors import RecipeError
    from dafnet.testing import DEFAULT_FACTS

    with pytest.raises(RecipeError) as info:
        build("decoder", "dafnet_example_decoder.decoder:ResidualFiLMBlock", {}, DEFAULT_FACTS, "model.decoder")
    text = str(info.value)
    assert "model.decoder.name" in text
    assert "is not a subclass of dafnet.interfaces.networks.Decoder" in text
    assert "derive from dafnet.interfaces.Decoder" in text


def test_a_misspelt_direct_class_is_a_clear_error(plugin_source_only):
    from dafnet.builder import build
    from dafnet.config.errors import RecipeError
    from dafnet.testing import DEFAULT_FACTS

    with pytest.raises(RecipeError) as info:
        build("decoder", "dafnet_example_decoder.decoder:ResidualFilmDecoder", {}, DEFAULT_FACTS, "model.decoder")
    assert "failed to import (dafnet_example_decoder.decoder:ResidualFilmDecoder)" in str(info.value)
    assert "AttributeError" in str(info.value)


def test_direct_class_params_are_validated_at_the_recipe_path(plugin_source_only):
    from dafnet.builder import build
    from dafnet.config.errors import RecipeError
    from dafnet.testing import DEFAULT_FACTS

    with pytest.raises(RecipeError) as info:
        build("decoder", PLUGIN_TARGET, {"width": 4, "depth": 3}, DEFAULT_FACTS, "model.decoder")
    assert "model.decoder.params.depth" in str(info.value)


# --------------------------------------------------------------------------- recipes
def test_recipe_names_the_plugin_and_summary_builds_it(installed_plugin):
    proc = run_cli(["summary", str(QUICKSTART), *TINY_MODEL], installed_plugin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(li for li in proc.stdout.splitlines() if li.strip("│ ").startswith("decoder"))
    assert "residual_film" in line and "1x1x64x64" in line


def test_recipe_naming_the_class_directly_validates(plugin_source_only):
    from dafnet.config import load_recipe

    recipe = load_recipe(QUICKSTART, [f"model.decoder={PLUGIN_TARGET}", "model.decoder.params.width=4"])
    assert recipe.model["decoder"].name == PLUGIN_TARGET
    assert recipe.model["decoder"].params["width"] == 4
    assert recipe.model["decoder"].params["norm"] == "instance"  # defaults filled in


def test_recipe_naming_a_broken_plugin_fails_with_exit_2_naming_it(broken_plugin):
    proc = run_cli(["validate", str(QUICKSTART), "model.decoder=broken"], broken_plugin)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "model.decoder.name" in text and "dafnet-broken-plugin" in text


@pytest.mark.slow
def test_train_with_the_plugin_by_name_from_a_recipe(installed_plugin, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    proc = run_cli(["train", str(QUICKSTART), *TINY_MODEL, "train.epochs=1", "train.batch_size=2",
                    "train.iterations_per_epoch=1", "train.swa_start=null", "output.tensorboard=false",
                    "output.figures=false", "--run-dir", str(run_dir)], installed_plugin, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exported = run_dir / "export" / "decoder.safetensors"
    assert exported.exists(), sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    import yaml
    from safetensors.torch import load_file

    model = yaml.safe_load((run_dir / "recipe.yaml").read_text())["model"]
    recorded = model["decoder"]
    assert recorded["name"] == "residual_film"
    assert recorded["params"]["width"] == 4 and recorded["params"]["norm"] == "instance"

    # The exported weights load strictly into the plugin's class, built from the recorded params.
    monkeypatch.syspath_prepend(str(PLUGIN / "src"))
    from dafnet_example_decoder.decoder import ResidualFiLMDecoder

    from dafnet.interfaces import Facts

    facts = Facts(image_size=(64, 64), anatomy_channels=model["anatomy_encoder"]["params"]["channels"],
                  z_dim=model["modality_encoder"]["params"]["z_dim"])
    decoder = ResidualFiLMDecoder(ResidualFiLMDecoder.Params(**recorded["params"]), facts)
    decoder.load_state_dict(load_file(str(exported)), strict=True)
