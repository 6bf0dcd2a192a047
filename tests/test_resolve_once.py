"""A recipe is resolved once, and each component's params are validated once (issue 17): the CLI
resolves, ``engine.train`` takes the resolved recipe as it is, and the builder takes the ``Params``
that resolution validated."""

from __future__ import annotations

import importlib
from collections import Counter

import pytest
import yaml
from test_engine import ToyCritic, ToyMethod, ToySource, quiet, toy_recipe

# the module (dafnet.config re-exports its function `resolve` under the same name)
resolve_module = importlib.import_module("dafnet.config.resolve")


@pytest.fixture
def counts(monkeypatch):
    """Counter of ``resolve`` calls (key ``resolve``) and of each toy component's ``Params``
    validations (keyed by the component class name)."""
    seen: Counter = Counter()
    real_resolve = resolve_module.resolve

    def counted_resolve(recipe):
        seen["resolve"] += 1
        return real_resolve(recipe)

    monkeypatch.setattr(resolve_module, "resolve", counted_resolve)
    for cls in (ToySource, ToyMethod, ToyCritic):
        real = cls.Params.model_validate

        def counted(_, obj, *args, _real=real, _name=cls.__name__, **kwargs):
            seen[_name] += 1
            return _real(obj, *args, **kwargs)

        monkeypatch.setattr(cls.Params, "model_validate", classmethod(counted))
    return seen


def _yaml(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(tmp_path, train={"epochs": 1}).model_dump(mode="json")))
    return path


def test_cli_train_resolves_once_and_validates_each_component_once(tmp_path, counts, monkeypatch):
    from dafnet.cli import run_cmds

    monkeypatch.setattr(run_cmds, "console", quiet())
    run_cmds.train(recipe=str(_yaml(tmp_path)), overrides=[], run_dir=tmp_path / "run", resume=None)
    assert (tmp_path / "run" / "export").is_dir()
    assert counts == {"resolve": 1, "ToySource": 1, "ToyMethod": 1, "ToyCritic": 1}


def test_engine_train_takes_a_resolved_recipe_as_it_is(tmp_path, counts):
    from dafnet.config import load_recipe
    from dafnet.engine import train

    recipe = load_recipe(_yaml(tmp_path))
    assert recipe.is_resolved
    train(recipe, run_dir=tmp_path / "run", console=quiet())
    assert counts == {"resolve": 1, "ToySource": 1, "ToyMethod": 1, "ToyCritic": 1}


def test_engine_train_resolves_a_path_or_an_unresolved_recipe_once(tmp_path, counts):
    from dafnet.engine import train

    train(_yaml(tmp_path), run_dir=tmp_path / "a", console=quiet())
    assert counts["resolve"] == 1
    recipe = toy_recipe(tmp_path, train={"epochs": 1})
    assert not recipe.is_resolved
    train(recipe, run_dir=tmp_path / "b", console=quiet())
    assert counts == {"resolve": 2, "ToySource": 2, "ToyMethod": 2, "ToyCritic": 2}


def test_a_changed_spec_is_validated_again_when_built(tmp_path):
    """The validated Params are a cache of ``params``: a spec edited after resolution is built from
    its (new) mapping, and the cache never takes part in equality."""
    from dafnet.config import load_recipe

    recipe = load_recipe(_yaml(tmp_path))
    spec = recipe.data.source
    assert spec.build_params is not spec.params
    spec.params["subjects"] = 3
    assert spec.build_params is spec.params
    assert spec == type(spec)(name=spec.name, params=dict(spec.params))


def test_the_experiment_runner_trains_each_cell_on_its_resolved_recipe(tmp_path, counts, monkeypatch):
    """The grid resolves each cell's recipe (dafnet.experiment.grid.expand); the runner's train
    takes it as it is."""
    from rich.console import Console
    from test_experiment import write_spec

    from dafnet.engine import trainer
    from dafnet.experiment import run_experiment

    trained = []
    real_train = trainer.train

    def spy(recipe=None, *args, **kwargs):
        before = counts["resolve"]
        trained.append(recipe.is_resolved)
        result = real_train(recipe, *args, **kwargs)
        assert counts["resolve"] == before, "engine.train resolved the cell's recipe again"
        return result

    monkeypatch.setattr(trainer, "train", spy)
    monkeypatch.setattr("dafnet.engine.train", spy)
    spec = write_spec(tmp_path, methods={"UNet-multi": {"recipe": "unet.yaml"}}, reference="UNet-multi",
                      fractions=[1.0], folds=[0])
    run_experiment(spec, out=tmp_path / "out", console=Console(quiet=True))
    assert trained == [True]
