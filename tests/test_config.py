"""Recipes: base inheritance, overrides, two-phase validation and its error paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dafnet.config import RecipeError, load_recipe
from dafnet.config.loading import apply_overrides, deep_merge


@pytest.fixture(autouse=True)
def toys():
    import _toys

    _toys.register_toys()
    return _toys


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def paths(exc: RecipeError) -> list[str]:
    return [i.path for i in exc.issues]


def test_valid_recipe_is_resolved_with_defaults(tmp_path, toys):
    recipe = load_recipe(write(tmp_path, "r.yaml", toys.TOY_RECIPE))
    assert recipe.model["decoder"].params == {"channels": 4}
    assert recipe.data.source.params == {"size": 8, "subjects": 2}
    assert recipe.data.modalities == ["a", "b", "c"] and recipe.data.target == "c"
    assert recipe.losses == {"rec": 1.0, "kl": 0.1}
    assert recipe.method.params == {"k": 1}
    assert recipe.train.epochs == 2 and recipe.train.batch_size == 6  # a default filled in


def test_missing_role_gets_the_method_default(tmp_path, toys):
    text = toys.TOY_RECIPE.replace("  decoder: {name: toy_decoder, params: {channels: 4}}\n", "  {}\n")
    text = text.replace("model:\n  {}\n", "")
    recipe = load_recipe(write(tmp_path, "r.yaml", text))
    assert recipe.model["decoder"].name == "toy_decoder"


def test_every_error_at_once_with_yaml_paths(tmp_path):
    path = write(tmp_path, "bad.yaml", """\
        name: bad
        method: toy_method
        data:
          source: {name: toy_source, params: {size: 2}}
          annotation_fraction: 1.5
        model:
          decoder: {name: toy_decoder, params: {channels: 0, colour: red}}
          segmenter: conv_head
        losses: {rec: 1, klx: 2}
        train: {epochs: three, batchsize: 4}
        """)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    got = paths(err.value)
    # phase one reports the skeleton problems first
    assert "data.annotation_fraction" in got
    assert "train.epochs" in got
    assert "train.batchsize" in got
    assert err.value.source == str(path)
    unknown = next(i for i in err.value.issues if i.path == "train.batchsize")
    assert unknown.message == "unknown key; did you mean train.batch_size?"
    # ... and the component problems in the same run
    assert "model.decoder.params.channels" in got
    assert "model.decoder.params.colour" in got
    assert "data.source.params.size" in got


def test_component_params_errors_name_the_param_path(tmp_path, toys):
    text = toys.TOY_RECIPE.replace("params: {channels: 4}", "params: {channels: 0, colour: red}")
    text = text.replace("params: {size: 8}", "params: {size: 2}")
    text += "losses: {klx: 2}\n"
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "r.yaml", text))
    got = paths(err.value)
    assert "model.decoder.params.channels" in got
    assert "model.decoder.params.colour" in got
    assert "data.source.params.size" in got
    assert "losses.klx" in got


def test_unknown_component_did_you_mean_and_installed_list(tmp_path, toys):
    text = toys.TOY_RECIPE.replace("name: toy_decoder", "name: toy_decodr")
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "r.yaml", text))
    issue = err.value.issues[0]
    assert issue.path == "model.decoder.name"
    assert "did you mean 'toy_decoder'" in issue.message
    assert "film" in issue.hint and "toy_decoder" in issue.hint


def test_unknown_role(tmp_path, toys):
    text = toys.TOY_RECIPE + "  segmenter: conv_head\n"
    text = text.replace("train:\n  epochs: 2\n  segmenter: conv_head\n", "train:\n  epochs: 2\n")
    text = toys.TOY_RECIPE.replace("model:\n", "model:\n  segmenter: conv_head\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "r.yaml", text))
    assert paths(err.value) == ["model.segmenter"]
    assert "decoder" in err.value.issues[0].hint


def test_base_inheritance_deep_merges(tmp_path, toys):
    write(tmp_path, "parent.yaml", toys.TOY_RECIPE)
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write(sub, "child.yaml", """\
        base: ../parent.yaml
        name: child
        train: {batch_size: 3}
        model:
          decoder: {params: {channels: 7}}
        """)
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.train.batch_size == 3 and recipe.train.epochs == 2
    assert recipe.model["decoder"].name == "toy_decoder"
    assert recipe.model["decoder"].params == {"channels": 7}


def test_base_switching_component_drops_old_params(tmp_path, toys):
    write(tmp_path, "parent.yaml", toys.TOY_RECIPE)
    child = write(tmp_path, "child.yaml", "base: parent.yaml\nmodel:\n  decoder: {name: other_decoder}\n")
    recipe = load_recipe(child)
    assert recipe.model["decoder"].name == "other_decoder"
    assert recipe.model["decoder"].params == {"depth": 2}


def test_base_errors(tmp_path, toys):
    a = write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(a)
    c = write(tmp_path, "c.yaml", "base: nowhere.yaml\n")
    with pytest.raises(RecipeError, match="base recipe not found"):
        load_recipe(c)
    d = write(tmp_path, "d.yaml", "base: [a.yaml, b.yaml]\n")
    with pytest.raises(RecipeError, match="single inheritance"):
        load_recipe(d)


def test_overrides(tmp_path, toys):
    path = write(tmp_path, "r.yaml", toys.TOY_RECIPE)
    recipe = load_recipe(path, ["train.epochs=3", "train.betas=[0.5, 0.9]", "model.decoder.params.channels=9",
                                "data.target=a"])
    assert recipe.train.epochs == 3
    assert recipe.train.betas == (0.5, 0.9)
    assert recipe.model["decoder"].params["channels"] == 9
    assert recipe.data.target == "a"


def test_override_switches_component_by_name(tmp_path, toys):
    path = write(tmp_path, "r.yaml", toys.TOY_RECIPE)
    recipe = load_recipe(path, ["model.decoder=other_decoder"])
    assert recipe.model["decoder"].name == "other_decoder"
    assert recipe.model["decoder"].params == {"depth": 2}
    recipe = load_recipe(path, ["model.decoder=other_decoder", "model.decoder.params.depth=5"])
    assert recipe.model["decoder"].params == {"depth": 5}
    recipe = load_recipe(path, ["model.decoder.name=other_decoder"])
    assert recipe.model["decoder"].params == {"depth": 2}
    recipe = load_recipe(path, ["model.decoder={name: other_decoder, params: {depth: 3}}"])
    assert recipe.model["decoder"].params == {"depth": 3}
    recipe = load_recipe(path, ["model.decoder={params: {channels: 2}}"])
    assert recipe.model["decoder"] .params == {"channels": 2}


def test_bad_overrides(tmp_path, toys):
    path = write(tmp_path, "r.yaml", toys.TOY_RECIPE)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["train.epochs", "name.x=1", "train.nope=1"])
    got = paths(err.value)
    assert "train.epochs" in got and "name" in got
    assert "override" in err.value.issues[0].message


def test_unknown_keys_suggest_the_closest_key_at_their_level(tmp_path, toys):
    text = toys.TOY_RECIPE.replace("train:\n  epochs: 2\n", "train:\n  epcohs: 2\n  health: {enabeld: false}\n")
    text += "namez: x\noutput: {figurs: false}\n"
    text = text.replace("  source:", "  split: {fols: 2}\n  source:")
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "r.yaml", text))
    said = {i.path: i.message for i in err.value.issues}
    assert said == {"train.epcohs": "unknown key; did you mean train.epochs?",
                    "train.health.enabeld": "unknown key; did you mean train.health.enabled?",
                    "data.split.fols": "unknown key; did you mean data.split.folds?",
                    "output.figurs": "unknown key; did you mean output.figures?",
                    "namez": "unknown key; did you mean name?"}
    with pytest.raises(RecipeError) as err:  # a mapping of components: the component's own keys
        load_recipe(write(tmp_path, "r.yaml", toys.TOY_RECIPE.replace("params: {channels: 4}",
                                                                       "parms: {channels: 4}")))
    assert [i.message for i in err.value.issues] == ["unknown key; did you mean model.decoder.params?"]
    with pytest.raises(RecipeError) as err:  # nothing close: no suggestion
        load_recipe(write(tmp_path, "r.yaml", toys.TOY_RECIPE + "zzzzzz: 1\n"))
    assert [i.message for i in err.value.issues] == ["unknown key"]


def test_an_override_typo_is_reported_as_the_override(tmp_path, toys):
    path = write(tmp_path, "r.yaml", toys.TOY_RECIPE)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["train.epcohs=3", "train.epochs=many"])
    issues = {i.path: i for i in err.value.issues}
    assert issues["train.epcohs"].message == \
        "override 'train.epcohs=3': unknown key train.epcohs; did you mean train.epochs?"
    assert issues["train.epcohs"].hint == "fix the override on the command line"
    assert issues["train.epochs"].message.startswith("override 'train.epochs=many': Input should be a valid integer")
    assert err.value.source == f"the overrides of {path}"
    with pytest.raises(RecipeError) as err:  # phase two: roles, loss terms, component params
        load_recipe(path, ["model.decodr=toy_decoder", "losses.recc=1", "model.decoder.params.chanels=2"])
    said = {i.path: i.message for i in err.value.issues}
    assert said["model.decodr"].startswith("override 'model.decodr=toy_decoder': unknown role model.decodr")
    assert said["model.decodr"].endswith("did you mean model.decoder?")
    assert said["losses.recc"].startswith("override 'losses.recc=1': unknown loss term losses.recc")
    assert said["losses.recc"].endswith("did you mean losses.rec?")
    assert said["model.decoder.params.chanels"] == ("override 'model.decoder.params.chanels=2': unknown parameter "
                                                    "model.decoder.params.chanels; did you mean 'channels'?")
    broken = write(tmp_path, "b.yaml", toys.TOY_RECIPE.replace("epochs: 2", "epochz: 2"))
    with pytest.raises(RecipeError) as err:  # the file's own typo stays the file's
        load_recipe(broken, ["train.seeed=1"])
    said = {i.path: i.message for i in err.value.issues}
    assert said == {"train.epochz": "unknown key; did you mean train.epochs?",
                    "train.seeed": "override 'train.seeed=1': unknown key train.seeed; did you mean train.seed?"}
    assert err.value.source == f"{broken} and its overrides"


def test_yaml_problems(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML at line 2"):
        load_recipe(write(tmp_path, "x.yaml", "a: 1\n b: [\n"))
    with pytest.raises(RecipeError, match="mapping at the top level"):
        load_recipe(write(tmp_path, "y.yaml", "- 1\n- 2\n"))
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "none.yaml")
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "empty.yaml", ""))
    assert "data" in paths(err.value)


def test_split_and_modalities_checks(tmp_path, toys):
    text = toys.TOY_RECIPE.replace("data:\n", "data:\n  modalities: [a, z]\n  split: {train: 0.5}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "r.yaml", text))
    got = paths(err.value)
    assert "data.split.train" in got  # 0.5 + validation 0.15 + test 1/3 (3 folds) is not 1
    text = toys.TOY_RECIPE.replace("data:\n", "data:\n  modalities: [a, z]\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "r.yaml", text))
    assert paths(err.value) == ["data.modalities"]
    assert "provides ['a', 'b', 'c']" in err.value.issues[0].hint


def test_deep_merge_and_apply_overrides_are_pure():
    base = {"a": {"b": 1}, "m": {"name": "x", "params": {"p": 1}}}
    merged = deep_merge(base, {"a": {"c": 2}})
    assert merged == {"a": {"b": 1, "c": 2}, "m": {"name": "x", "params": {"p": 1}}}
    assert base == {"a": {"b": 1}, "m": {"name": "x", "params": {"p": 1}}}
    out = apply_overrides({"m": "x"}, ["m.params.p=3"])
    assert out == {"m": {"name": "x", "params": {"p": 3}}}


def test_cross_field_problems_are_filed_under_the_key_at_fault():
    from dafnet.config.loading import apply_overrides
    from dafnet.config.resolve import parse_recipe

    base = {"method": "dafnet", "data": {"source": "phantom", "modalities": ["cine", "lge"]}}
    for override, path, message in (("data.target=nope", "data.target", "'nope' is not one of modalities "
                                                                        "['cine', 'lge']"),
                                    ("data.split.fold=5", "data.split.fold", "fold 5 does not exist with folds=3 "
                                                                             "(0-based)")):
        with pytest.raises(RecipeError) as err:
            parse_recipe(apply_overrides(base, [override]))
        assert {i.path: i.message for i in err.value.issues}[path] == message


def test_a_value_fitting_no_member_of_a_union_is_one_problem_at_the_key():
    with pytest.raises(RecipeError) as err:
        load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml",
                    ["data.source.params.image_size=abc"])
    [issue] = err.value.issues
    assert issue.path == "data.source.params.image_size"
    assert issue.message == ("override 'data.source.params.image_size=abc': Input should be a valid integer or a "
                             "valid tuple (got 'abc')")


def test_a_bare_yaml_no_is_accelerates_mixed_precision_no(tmp_path, toys):
    # YAML 1.1 reads `mixed_precision: no` as false; it means accelerate's "no", not an error.
    path = write(tmp_path, "r.yaml", toys.TOY_RECIPE + "  mixed_precision: no\n")
    assert load_recipe(path).train.mixed_precision == "no"
