"""The exported model: ``export/dafnet_index.json`` and ``export/<role>.safetensors``.

The index holds everything needed to rebuild the method without the recipe file or the
data: the method's name and params, the facts it was built with, per role the component,
params and registry origin, and the resolved recipe. :func:`load_export` rebuilds the method
through the registry and loads each network's weights. The folder is written to a temporary
sibling and renamed into place, so a reader never sees half an export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save
from torch import nn

from dafnet.config.errors import RecipeError
from dafnet.config.schema import Recipe
from dafnet.errors import DafnetError
from dafnet.fsutil import raise_write_failed, replace_directory, staging_path
from dafnet.interfaces.facts import Facts

INDEX_FILE = "dafnet_index.json"
FORMAT = "dafnet-export"
FORMAT_VERSION = 3
"""2: the TPS aligner's ``grid_range`` and SPADE's ``norm`` exist (new defaults ``unit`` and
``sample``); a version-1 export keeps what it was trained with (:func:`_upgrade_recipe`).
3: ``plans`` holds the planned spacing of a recipe with ``spacing_mm: auto``."""

_V1_DEFAULTS = {"tps": {"grid_range": "symmetric"}, "spade": {"norm": "channel"}}
"""Params whose default changed after format version 1, with the version-1 behaviour."""
_DAMAGED = ("copy the export again from where the run wrote it, or train the run again "
            "(an export is written whole, so a damaged copy cannot be mended)")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def facts_to_json(facts: Facts) -> dict:
    return {f.name: (list(v) if isinstance(v, tuple) else v)
            for f in dataclasses.fields(Facts) for v in [getattr(facts, f.name)]}


def facts_from_json(data: dict) -> Facts:
    known = {f.name for f in dataclasses.fields(Facts)}
    unknown = set(data) - known
    if unknown:
        raise DafnetError(f"export index has unknown facts {sorted(unknown)}",
                          hint="the export was written by a newer dafnet; upgrade dafnet")
    return Facts(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _roles_index(recipe: Recipe) -> dict:
    from dafnet.registry import registry

    method_cls = registry("method").get(recipe.method.name)
    out = {}
    for role, spec in recipe.model.items():
        kind = method_cls.roles[role].kind
        entry = registry(kind).entry(spec.name)
        out[role] = {"kind": kind, "component": spec.name, "params": spec.params,
                     "target": entry.target, "origin": entry.origin}
    return out


def write_export(export_dir: str | Path, *, networks: dict[str, nn.Module], recipe: Recipe,
                 facts: Facts, weights: dict, plans: dict | None = None) -> Path:
    """Write the export folder atomically. ``weights`` says which weights these are
    (e.g. ``{"source": "swa", "epochs": [40, 57]}``); ``plans``: the data's planned spacing
    (:func:`dafnet.data.plans.plan_data`), stored when the recipe's ``spacing_mm`` is ``auto``. A
    write that fails (disk full, permission) is a :class:`WriteFailed` naming ``export_dir``; the
    staged folder is removed."""
    export_dir = Path(export_dir)
    tmp = staging_path(export_dir)
    try:
        export_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        _write_export_files(tmp, networks, recipe, facts, weights, plans)
        replace_directory(tmp, export_dir)
    except BaseException as exc:  # noqa: BLE001 (raise_write_failed re-raises it)
        shutil.rmtree(tmp, ignore_errors=True)
        raise_write_failed(exc, f"write the export to {export_dir}", export_dir)
    return export_dir


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with a header whose order is fixed (metadata keys sorted,
    then the tensors by name), so the same weights always give the same bytes: safetensors keeps
    the metadata in a hash map whose order changes from call to call."""
    data = save(tensors, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | dict(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.write(memoryview(data)[8 + size:])


def _write_export_files(tmp: Path, networks: dict[str, nn.Module], recipe: Recipe, facts: Facts,
                        weights: dict, plans: dict | None = None) -> None:
    from dafnet.registry import registry

    nets_index = {}
    for role, net in networks.items():
        if not _SAFE_NAME.match(role):
            raise DafnetError(f"network role {role!r} cannot be a file name",
                              hint="use letters, digits, '_', '-' and '.' in role names")
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
        file = f"{role}.safetensors"
        save_safetensors(tensors, tmp / file, metadata={"role": role, "format": "pt"})
        nets_index[role] = {
            "file": file,
            "class": f"{type(net).__module__}:{type(net).__qualname__}",
            "parameters": sum(p.numel() for p in net.parameters()),
            "sha256": _sha256(tmp / file),
        }
    entry = registry("method").entry(recipe.method.name)
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": {"name": recipe.method.name, "params": recipe.method.params,
                   "target": entry.target, "origin": entry.origin},
        "facts": facts_to_json(facts),
        "roles": _roles_index(recipe),
        "networks": nets_index,
        "weights": weights,
        **({"plans": plans} if plans is not None else {}),
        "recipe": recipe.model_dump(mode="json"),
    }
    (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _export_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file() and path.name == INDEX_FILE:
        return path.parent
    if (path / "export" / INDEX_FILE).exists():
        return path / "export"
    return path


def read_index(path: str | Path) -> dict:
    """The parsed, checked index of an export folder (or of a run folder holding ``export/``)."""
    export_dir = _export_dir(path)
    index_path = export_dir / INDEX_FILE
    if not index_path.is_file():
        from dafnet.engine.leftovers import no_export_error

        unfinished = no_export_error(export_dir)
        if unfinished is not None:
            raise unfinished
        raise DafnetError(f"no export at {path}: {index_path} does not exist",
                          hint="give a run's export/ folder (or the run folder) written by `dafnet train`")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DafnetError(f"{index_path} is corrupt: {exc}", hint=_DAMAGED) from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DafnetError(f"{index_path} is not a dafnet export index", hint=_DAMAGED)
    if index.get("format_version", 0) > FORMAT_VERSION:
        raise DafnetError(f"{index_path} has format version {index.get('format_version')}, this dafnet "
                          f"reads up to {FORMAT_VERSION}", hint="upgrade dafnet")
    missing = [k for k in ("method", "facts", "roles", "networks", "recipe") if k not in index]
    if missing:
        raise DafnetError(f"{index_path} is corrupt: missing {missing}", hint=_DAMAGED)
    return index


def _upgrade_recipe(index: dict) -> None:
    """A version-1 export's built-in TPS and SPADE keep the behaviour they were trained with."""
    if index.get("format_version", 0) >= 2:
        return
    for spec in (index["recipe"].get("model") or {}).values():
        if isinstance(spec, dict) and spec.get("name") in _V1_DEFAULTS:
            params = spec.get("params") or {}
            spec["params"] = {**_V1_DEFAULTS[spec["name"]], **params}


def _exported_recipe(index: dict, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The stored recipe of ``index`` (read from the export at ``path``), with dotted ``overrides``
    applied and resolved again."""
    export_dir = _export_dir(path)
    _upgrade_recipe(index)
    if not overrides:
        try:
            return Recipe.model_validate(index["recipe"])
        except ValidationError as exc:
            raise DafnetError(f"{export_dir / INDEX_FILE}: the stored recipe is invalid: {exc}") from exc
    from dafnet.config.loading import apply_overrides, attribute_overrides, evaluation_override_issues
    from dafnet.config.resolve import parse_recipe, resolve

    source = f"{export_dir / INDEX_FILE} with the overrides {' '.join(overrides)}"
    issues = evaluation_override_issues(list(overrides))
    if issues:
        raise RecipeError(issues, source)
    try:
        return resolve(parse_recipe(apply_overrides(index["recipe"], list(overrides))))
    except RecipeError as exc:
        raise RecipeError(attribute_overrides(exc.issues, overrides), source) from None


def exported_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The recipe the export at ``path`` was trained with, with dotted ``overrides`` applied and
    resolved again: the recipe :func:`load_export` rebuilds the method from (a method keeps only
    its context, not the recipe)."""
    export_dir = _export_dir(path)
    return _exported_recipe(read_index(export_dir), export_dir, overrides)


def _plugins_named_in(index: dict, message: str) -> list[str]:
    """The export's non-built-in components (method included) that ``message`` names, with origins."""
    used = [{"kind": "method", "component": index["method"].get("name"), "origin": index["method"].get("origin")}]
    used += [r for r in index["roles"].values() if isinstance(r, dict)]
    return sorted({f"{r.get('kind')} {r.get('component')!r} from {r.get('origin')}" for r in used
                   if r.get("origin") not in (None, "built-in") and repr(r.get("component")) in message})


def load_export(path: str | Path, device: str | torch.device = "cpu", overrides: list[str] | tuple[str, ...] = ()):
    """Rebuild the exported method (in eval mode) and load its weights.

    ``overrides`` (``model.fuser.name=mean``) change the stored recipe before the method is
    rebuilt: choices without weights (the fuser, an inference option of the method) can change
    after training; the weights must still fit every network exactly.
    """
    from dafnet.assemble import build_method

    export_dir = _export_dir(path)
    index = read_index(export_dir)
    facts = facts_from_json(index["facts"])
    try:
        recipe = _exported_recipe(index, export_dir, overrides)
        method = build_method(recipe, facts)
    except RecipeError as exc:  # most often: a plugin the export was made with is not installed here
        plugins = _plugins_named_in(index, str(exc))
        if not plugins:
            raise
        raise DafnetError(f"{export_dir} cannot be rebuilt here: {exc}",
                          hint=f"it was exported with {'; '.join(plugins)}: install that plugin distribution "
                               "(or, for a runtime entry, register it) and load it again") from exc
    networks = method.networks()
    expected = index["networks"]
    changed = (f"; the overrides {' '.join(overrides)} change the networks, and only choices without "
               "weights (e.g. model.fuser.name) can change after training") if overrides else ""
    if set(networks) != set(expected):
        raise DafnetError(f"export {export_dir} holds networks {sorted(expected)} but method "
                          f"{recipe.method.name!r} builds {sorted(networks)}{changed}",
                          hint="drop those overrides" if overrides else
                          "load it with the dafnet / plugin versions it was exported with")
    for role, net in networks.items():
        file = export_dir / expected[role]["file"]
        if not file.is_file():
            raise DafnetError(f"export {export_dir} is missing the weights of {role!r} ({file.name})",
                              hint="the export is incomplete; " + _DAMAGED)
        if "sha256" in expected[role] and _sha256(file) != expected[role]["sha256"]:
            raise DafnetError(f"{file} is corrupt (its checksum differs from the index)",
                              hint=_DAMAGED)
        try:
            state = load_file(str(file), device=str(device))
        except Exception as exc:  # safetensors raises its own error types
            raise DafnetError(f"{file} is not a readable safetensors file: {exc}",
                              hint=_DAMAGED) from exc
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            shown = "; ".join(lines[:4]) + (f"; ... ({len(lines) - 4} more)" if len(lines) > 4 else "")
            raise DafnetError(f"weights in {file} do not fit network {role!r}{changed}: {shown}",
                              hint="drop those overrides" if overrides else
                              "load it with the component versions it was exported with") from exc
    method.to(device)
    method.eval()
    return method
