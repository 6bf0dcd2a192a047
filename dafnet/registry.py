"""Typed component registries, one per kind, filled lazily.

An entry is a name and a ``"module:attr"`` target; nothing is imported until a recipe
(or ``dafnet plugins info``) asks for the class. Entries come from three places:

* dafnet's built-ins (:mod:`dafnet.builtins`), origin ``built-in``;
* Python entry points in the group ``dafnet.<kind>`` of any installed distribution
  (the entry-point name is the registry key), origin ``<distribution> <version>``;
  ``DAFNET_DISABLE_PLUGIN_AUTOLOAD=1`` turns this discovery off;
* :func:`register` at run time (tests, notebooks), origin ``runtime``.

A recipe may also name a class directly as ``package.module:Class``.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from importlib import metadata

from dafnet.errors import DafnetError


@dataclass(frozen=True)
class Kind:
    name: str
    """Registry key and entry-point group suffix (``dafnet.<name>``)."""
    title: str
    """Human name, e.g. 'anatomy encoder'."""
    base: str
    """``module:attr`` of the ABC every entry must subclass."""


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("anatomy_encoder", "anatomy encoder", "dafnet.interfaces:AnatomyEncoder"),
        Kind("modality_encoder", "modality encoder", "dafnet.interfaces:ModalityEncoder"),
        Kind("aligner", "aligner", "dafnet.interfaces:Aligner"),
        Kind("fuser", "fuser", "dafnet.interfaces:Fuser"),
        Kind("decoder", "decoder", "dafnet.interfaces:Decoder"),
        Kind("segmentor", "segmentor", "dafnet.interfaces:Segmentor"),
        Kind("discriminator", "discriminator", "dafnet.interfaces:Discriminator"),
        Kind("pairing_head", "pairing head", "dafnet.interfaces:PairingHead"),
        Kind("loss", "loss", "dafnet.interfaces:LossTerm"),
        Kind("metric", "metric", "dafnet.interfaces:Metric"),
        Kind("data_source", "data source", "dafnet.interfaces:DataSource"),
        Kind("method", "method", "dafnet.interfaces:Method"),
    ]
}

ENTRY_POINT_PREFIX = "dafnet."
BUILTIN = "built-in"


class RegistryError(DafnetError):
    """A registry problem the user can fix (unknown name, duplicate, broken plugin)."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    target: str
    """``module:attr``."""
    origin: str
    """``built-in``, ``runtime`` or ``<distribution> <version>``."""
    distribution: str | None = None

    def load(self) -> type:
        """Import the target and check it subclasses the kind's ABC."""
        try:
            obj = _import_target(self.target)
        except Exception as exc:  # any import failure of a plugin is reported
            who = f"plugin distribution {self.distribution!r}" if self.distribution else self.origin
            raise RegistryError(
                f"{KINDS[self.kind].title} {self.name!r} from {who} failed to import "
                f"({self.target}): {type(exc).__name__}: {exc}",
                hint=(
                    f"reinstall or fix {self.distribution!r}, or set "
                    "DAFNET_DISABLE_PLUGIN_AUTOLOAD=1 to ignore installed plugins"
                    if self.distribution
                    else "check the module path"
                ),
            ) from exc
        base = _import_target(KINDS[self.kind].base)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(
                f"{KINDS[self.kind].title} {self.name!r} ({self.target}, {self.origin}) is not a "
                f"subclass of {base.__module__}.{base.__qualname__}",
                hint=f"make the class derive from dafnet.interfaces.{base.__qualname__}",
            )
        return obj


def _import_target(target: str):
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'package.module:Attr', got {target!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry:
    """The entries of one kind.

    Two discovered entries with one name (two plugins, or a plugin and a built-in) are a
    *conflict*: it is kept, listed, and reported when that name is used, so the rest of the
    kind (and every other kind) keeps working while the user sorts it out.
    """

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise RegistryError(f"unknown registry kind {kind!r}", hint=f"kinds: {', '.join(KINDS)}")
        self.kind = KINDS[kind]
        self._entries: dict[str, Entry] = {}
        self._conflicts: dict[str, list[Entry]] = {}

    def add(self, entry: Entry, strict: bool = False) -> None:
        """Add an entry; a second target for a known name becomes a conflict, or with ``strict``
        (a runtime registration) a :class:`RegistryError` at once."""
        old = self._entries.get(entry.name)
        contested = entry.name in self._conflicts or (old is not None and old.target != entry.target)
        if strict and contested:
            raise self.duplicate_error(entry.name, (self.conflict(entry.name) or [old]) + [entry], runtime=True)
        if contested:
            rivals = self._conflicts.setdefault(entry.name, [old])
            if all(r.target != entry.target for r in rivals):
                rivals.append(entry)
            return
        self._entries[entry.name] = entry

    def conflict(self, name: str) -> list[Entry]:
        """The entries that claim ``name`` (empty when it is not contested)."""
        return list(self._conflicts.get(name, []))

    def duplicate_error(self, name: str, rivals: list[Entry] | None = None, runtime: bool = False) -> RegistryError:
        rivals = rivals or self._conflicts[name]
        claims = " and ".join(f"{e.target} ({e.origin})" for e in rivals)
        return RegistryError(
            f"duplicate {self.kind.title} name {name!r}: {claims}",
            hint="register it under another name" if runtime else
            "uninstall one of the distributions or rename its entry point; "
            "`dafnet plugins list` marks every contested name",
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries or ":" in name

    def entry(self, name: str) -> Entry:
        if name in self._conflicts:
            raise self.duplicate_error(name)
        if name in self._entries:
            return self._entries[name]
        if ":" in name:  # a class named directly in a recipe
            return Entry(self.kind.name, name, name, origin="direct")
        raise RegistryError(self.unknown_message(name), hint=self.unknown_hint(name))

    def get(self, name: str) -> type:
        """The class registered under ``name`` (imported now, checked against the ABC)."""
        return self.entry(name).load()

    def suggestions(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)

    def unknown_message(self, name: str) -> str:
        msg = f"unknown {self.kind.title} {name!r}"
        close = self.suggestions(name)
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        return msg

    def unknown_hint(self, name: str) -> str:
        installed = ", ".join(self.names()) or "(none)"
        plural = self.kind.title + ("es" if self.kind.title.endswith("s") else "s")
        return f"installed {plural}: {installed}; or name a class as 'package.module:Class'"


_REGISTRIES: dict[str, Registry] | None = None
_RUNTIME: list[Entry] = []


def autoload_enabled() -> bool:
    return os.environ.get("DAFNET_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() not in {
        "1",
        "true",
        "yes",
        "on",
    }


def _build_all() -> dict[str, Registry]:
    from dafnet.builtins import BUILTINS

    regs = {name: Registry(name) for name in KINDS}
    for kind, table in BUILTINS.items():
        for name, target in table.items():
            regs[kind].add(Entry(kind, name, target, BUILTIN))
    if autoload_enabled():
        for kind in KINDS:
            for ep in metadata.entry_points(group=ENTRY_POINT_PREFIX + kind):
                dist = getattr(ep, "dist", None)
                dist_name = dist.metadata["Name"] if dist is not None else None
                origin = f"{dist_name} {dist.version}" if dist is not None else "entry point"
                regs[kind].add(Entry(kind, ep.name, ep.value, origin, dist_name))
    for entry in _RUNTIME:
        regs[entry.kind].add(entry)
    return regs


def registry(kind: str) -> Registry:
    """The registry of one kind (discovered once per process)."""
    global _REGISTRIES
    if kind not in KINDS:
        raise RegistryError(f"unknown registry kind {kind!r}", hint=f"kinds: {', '.join(KINDS)}")
    if _REGISTRIES is None:
        _REGISTRIES = _build_all()
    return _REGISTRIES[kind]


def all_registries() -> dict[str, Registry]:
    return {k: registry(k) for k in KINDS}


def register(kind: str, name: str, target: str | type) -> None:
    """Register a component at run time (``target`` is a class or ``'module:attr'``)."""
    reg = registry(kind)
    if isinstance(target, type):
        base = _import_target(KINDS[kind].base)
        if not issubclass(target, base):
            raise RegistryError(f"cannot register {target.__qualname__} as {KINDS[kind].title} {name!r}: it is not a "
                                f"subclass of {base.__module__}.{base.__qualname__}",
                                hint=f"make the class derive from dafnet.interfaces.{base.__qualname__}")
        target = f"{target.__module__}:{target.__qualname__}"
    entry = Entry(kind, name, target, "runtime")
    reg.add(entry, strict=True)
    _RUNTIME.append(entry)


def reset() -> None:
    """Forget discovered entries (they are found again on next use). For tests."""
    global _REGISTRIES
    _REGISTRIES = None
    _RUNTIME.clear()


def find_kind(name: str) -> list[Entry]:
    """Every entry of any kind with this name (for ``dafnet plugins info NAME``)."""
    return [reg.entry(name) for reg in all_registries().values() if name in reg._entries]
