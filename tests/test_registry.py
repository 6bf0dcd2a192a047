"""The typed registry: built-ins, runtime entries, duplicates, ABC checks, direct class paths."""

from __future__ import annotations

import pytest

from dafnet import registry as reg
from dafnet.builtins import BUILTINS
from dafnet.registry import KINDS, RegistryError, register, registry


def test_every_kind_has_a_registry_and_builtins_are_listed_lazily():
    assert set(BUILTINS) <= set(KINDS)
    for kind, table in BUILTINS.items():
        r = registry(kind)
        for name in table:
            entry = r.entry(name)
            assert entry.origin == "built-in"
            assert entry.target == table[name]


def test_listing_imports_nothing(monkeypatch):
    import importlib

    imported = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda n, *a: imported.append(n) or real(n, *a))
    reg.reset()
    for kind in KINDS:
        registry(kind).entries()
    assert imported == []


def test_runtime_registration_and_loading():
    import _toys

    register("decoder", "toy_decoder", _toys.ToyDecoder)
    cls = registry("decoder").get("toy_decoder")
    assert cls is _toys.ToyDecoder
    assert registry("decoder").entry("toy_decoder").origin == "runtime"


def test_unknown_name_suggests_close_matches_and_lists_installed():
    with pytest.raises(RegistryError) as err:
        registry("decoder").get("flim")
    assert "did you mean 'film'" in err.value.message
    assert "film" in err.value.hint and "spade" in err.value.hint


def test_duplicate_names_name_both_origins():
    r = registry("decoder")
    r.add(reg.Entry("decoder", "dup", "a.b:C", "dist-one 1.0", "dist-one"))
    r.add(reg.Entry("decoder", "dup", "x.y:Z", "dist-two 2.0", "dist-two"))  # kept as a conflict
    assert [e.origin for e in r.conflict("dup")] == ["dist-one 1.0", "dist-two 2.0"]
    assert "dup" in r.names() and r.get("film").__name__ == "FiLMDecoder"
    with pytest.raises(RegistryError) as err:
        r.get("dup")
    assert "dist-one 1.0" in err.value.message and "dist-two 2.0" in err.value.message
    with pytest.raises(RegistryError, match="duplicate decoder name 'film'") as err:
        register("decoder", "film", "x.y:Z")  # a runtime registration fails at once
    assert err.value.hint == "register it under another name"


def test_runtime_registration_checks_the_class_kind():
    from dafnet.components.decoders.film import FiLMDecoder

    with pytest.raises(RegistryError, match="not a subclass of .*Fuser"):
        register("fuser", "a_decoder", FiLMDecoder)


def test_entry_must_subclass_the_kind_abc():
    register("decoder", "not_a_decoder", "_toys:NotADecoder")
    with pytest.raises(RegistryError, match="not a subclass of .*Decoder"):
        registry("decoder").get("not_a_decoder")


def test_broken_plugin_is_an_error_naming_the_distribution():
    registry("decoder").add(reg.Entry("decoder", "broken", "no_such_module_xyz:Dec", "broken-dist 0.1", "broken-dist"))
    assert "broken" in registry("decoder").names()  # listing still works
    with pytest.raises(RegistryError) as err:
        registry("decoder").get("broken")
    assert "broken-dist" in err.value.message
    assert "ModuleNotFoundError" in err.value.message


def test_class_named_directly():
    cls = registry("decoder").get("_toys:ToyDecoder")
    assert cls.__name__ == "ToyDecoder"
    with pytest.raises(RegistryError):
        registry("decoder").get("_toys:DoesNotExist")


def test_unknown_kind():
    with pytest.raises(RegistryError, match="unknown registry kind"):
        registry("decodr")


def test_autoload_can_be_disabled(monkeypatch):
    monkeypatch.setenv("DAFNET_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert not reg.autoload_enabled()
    monkeypatch.setenv("DAFNET_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert reg.autoload_enabled()
