"""The export folder: index + safetensors per role; load_export rebuilds the method without the
recipe file or the data; broken exports give clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_engine import ToyMethod, quiet, toy_recipe

from dafnet.errors import DafnetError


@pytest.fixture
def trained(tmp_path_factory):
    from dafnet.engine import train

    root = tmp_path_factory.mktemp("export")
    result = train(toy_recipe(root, train={"epochs": 2}, method={"hidden": 5}), run_dir=root / "run",
                   console=quiet())
    return result


def test_index_describes_the_method(trained):
    index = json.loads((trained.export_dir / "dafnet_index.json").read_text())
    assert index["format"] == "dafnet-export" and index["format_version"] == 3
    assert index["method"]["name"] == "engine_toy" and index["method"]["params"]["hidden"] == 5
    assert index["method"]["origin"] == "runtime"
    assert index["facts"]["image_size"] == [2, 2] and index["facts"]["modalities"] == ["a", "b"]
    critic = index["roles"]["critic"]
    assert critic["kind"] == "discriminator" and critic["params"] == {"hidden": 6}
    assert index["networks"]["generator"]["file"] == "generator.safetensors"
    assert index["networks"]["generator"]["parameters"] == 4 * 5 + 5 + 5 * 4 + 4
    assert index["recipe"]["train"]["epochs"] == 2
    assert not list(trained.export_dir.parent.glob(".export*"))  # no temporary folders left


def test_load_export_round_trip(trained, tmp_path):
    from dafnet.assemble import build_data_source
    from dafnet.data.splits import split_data
    from dafnet.engine import load_export
    from dafnet.engine.rundir import read_run_recipe

    # elsewhere, without the run's recipe file: copy only the export folder
    moved = tmp_path / "moved"
    shutil.copytree(trained.export_dir, moved)
    method = load_export(moved)
    assert isinstance(method, ToyMethod) and not method.training
    weights = {r: load_file(str(moved / f"{r}.safetensors")) for r in ("generator", "critic")}
    for role, net in method.networks().items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, weights[role][key])
    # the loaded method reproduces the engine's final test evaluation of the exported weights
    recipe = read_run_recipe(trained.run_dir)
    source, _ = build_data_source(recipe)
    subjects = {s.id: s for s in source.load()}
    test_ids = split_data(list(subjects.values()), recipe.data)["test"]
    batch = torch.utils.data.default_collate(list(method.eval_dataset([subjects[i] for i in test_ids])))
    with torch.no_grad():
        summary = method.evaluation_summary(method.evaluation_step(batch))
    assert summary["monitor"] == pytest.approx(trained.summary["monitor"], rel=1e-6)
    # the run folder works too, and gives the same outputs
    again = load_export(trained.run_dir)
    x = torch.linspace(-1, 1, 8).reshape(2, 4)
    with torch.no_grad():
        assert torch.equal(method.generator(x), again.generator(x))


def test_missing_index(tmp_path):
    from dafnet.engine import load_export

    with pytest.raises(DafnetError, match="no export"):
        load_export(tmp_path)


def test_corrupt_index(trained, tmp_path):
    from dafnet.engine import load_export

    broken = tmp_path / "broken"
    shutil.copytree(trained.export_dir, broken)
    (broken / "dafnet_index.json").write_text("{not json")
    with pytest.raises(DafnetError, match="corrupt"):
        load_export(broken)
    (broken / "dafnet_index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DafnetError, match="not a dafnet export"):
        load_export(broken)


def test_missing_and_corrupt_weights(trained, tmp_path):
    from dafnet.engine import load_export

    broken = tmp_path / "broken"
    shutil.copytree(trained.export_dir, broken)
    data = (broken / "critic.safetensors").read_bytes()
    (broken / "critic.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DafnetError, match="corrupt"):
        load_export(broken)
    (broken / "critic.safetensors").unlink()
    with pytest.raises(DafnetError, match="missing the weights of 'critic'"):
        load_export(broken)


def test_a_component_missing_here_names_where_the_export_got_it(trained):
    from dafnet import registry
    from dafnet.engine import load_export

    registry.reset()  # as on a machine without the distribution that provided the method
    with pytest.raises(DafnetError) as err:
        load_export(trained.export_dir)
    assert "unknown method 'engine_toy'" in err.value.message
    assert "method 'engine_toy' from runtime" in err.value.hint


def test_weights_that_do_not_fit(trained, tmp_path):
    from dafnet.engine import load_export

    broken = tmp_path / "broken"
    shutil.copytree(trained.export_dir, broken)
    state = load_file(str(broken / "generator.safetensors"))
    state["0.weight"] = torch.zeros(3, 3)
    save_file(state, str(broken / "generator.safetensors"))
    index = json.loads((broken / "dafnet_index.json").read_text())
    del index["networks"]["generator"]["sha256"]
    (broken / "dafnet_index.json").write_text(json.dumps(index))
    with pytest.raises(DafnetError, match="do not fit network 'generator'"):
        load_export(broken)


def test_export_is_replaced_atomically(trained):
    from dafnet.engine import load_export
    from dafnet.engine.export import exported_recipe, write_export

    method = load_export(trained.export_dir)
    with torch.no_grad():
        for p in method.generator.parameters():
            p.add_(1.0)
    write_export(trained.export_dir, networks=method.networks(), recipe=exported_recipe(trained.export_dir),
                 facts=method.facts, weights={"source": "test"})
    reloaded = load_export(trained.export_dir)
    assert all(torch.equal(a, b) for a, b in zip(method.generator.parameters(), reloaded.generator.parameters()))
    assert json.loads((trained.export_dir / "dafnet_index.json").read_text())["weights"] == {"source": "test"}
    assert not list(trained.export_dir.parent.glob(".export*"))


def test_the_same_weights_export_byte_identical_safetensors(trained, tmp_path):
    from dafnet.engine import load_export
    from dafnet.engine.export import exported_recipe, save_safetensors, write_export

    method, recipe = load_export(trained.export_dir), exported_recipe(trained.export_dir)
    for folder in ("a", "b"):
        write_export(tmp_path / folder, networks=method.networks(), recipe=recipe, facts=method.facts,
                     weights={"source": "test"})
    for role in ("generator", "critic"):
        a, b = (tmp_path / f / f"{role}.safetensors" for f in ("a", "b"))
        assert a.read_bytes() == b.read_bytes()
        state = load_file(str(a))
        assert all(torch.equal(state[k], v) for k, v in method.networks()[role].state_dict().items())
    # safetensors alone orders its metadata differently from call to call; the header here is fixed
    tensors = {f"t{i}": torch.full((i + 1,), float(i)) for i in range(6)} | {"half": torch.ones(3).half()}
    metadata = {k: k * 2 for k in ("role", "format", "zeta", "alpha", "mid")}
    written = set()
    for i in range(8):
        save_safetensors(tensors, tmp_path / f"{i}.safetensors", metadata)
        written.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(written) == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata() == metadata
        assert all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())


def test_a_version_1_export_keeps_the_tps_and_spade_it_was_trained_with():
    # The TPS grid frame and SPADE's normalisation got new defaults in format version 2; an older
    # export (no such params stored) is rebuilt with the behaviour it was trained with.
    from dafnet.engine.export import _upgrade_recipe

    model = {"aligner": {"name": "tps", "params": {"hidden": 32}}, "decoder": {"name": "spade", "params": {}},
             "fuser": {"name": "max", "params": {}}}
    old = {"format_version": 1, "recipe": {"model": json.loads(json.dumps(model))}}
    _upgrade_recipe(old)
    assert old["recipe"]["model"]["aligner"]["params"] == {"grid_range": "symmetric", "hidden": 32}
    assert old["recipe"]["model"]["decoder"]["params"] == {"norm": "channel"}
    assert old["recipe"]["model"]["fuser"]["params"] == {}
    unit_tps = {"name": "tps", "params": {"grid_range": "unit"}}
    explicit = {"format_version": 1, "recipe": {"model": {"aligner": unit_tps}}}
    _upgrade_recipe(explicit)
    assert explicit["recipe"]["model"]["aligner"]["params"] == {"grid_range": "unit"}
    new = {"format_version": 2, "recipe": {"model": json.loads(json.dumps(model))}}
    _upgrade_recipe(new)
    assert new["recipe"]["model"] == model
