"""Reading recipe YAML: ``base:`` inheritance, deep merge, dotted overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from dafnet.config.errors import RecipeError, RecipeIssue

BASE_KEY = "base"
_MAX_DEPTH = 16


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RecipeError([RecipeIssue("<recipe>", f"file not found: {path}",
                                       "check the path; `dafnet recipes list` shows built-in recipes")])
    if path.is_dir():
        raise RecipeError([RecipeIssue("<recipe>", f"{path} is a directory, not a YAML file")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError([RecipeIssue("<recipe>", f"{path} is not valid YAML{where}: {problem}",
                                       "fix the YAML syntax (indentation, colons, quotes)")]) from exc
    except UnicodeDecodeError as exc:
        raise RecipeError([RecipeIssue("<recipe>", f"{path} is not UTF-8 text")]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue("<recipe>", f"{path} must hold a mapping at the top level, "
                                       f"got {type(data).__name__}")])
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``; mappings merge, everything else replaces.

    A component given by a different ``name`` replaces the base component whole, so the old
    component's params do not leak into the new one.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and not _renames_component(old, value):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _renames_component(old: dict, new: dict) -> bool:
    return "name" in old and "name" in new and old["name"] != new["name"]


def _anchor_split_file(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """``data.split.file`` made absolute against the folder of the recipe that names it, so the
    resolved recipe a run writes still finds it."""
    section = data.get("data")
    split = section.get("split") if isinstance(section, dict) else None
    if isinstance(split, dict) and isinstance(split.get("file"), str) and split["file"]:
        file = Path(split["file"]).expanduser()
        if not file.is_absolute():
            split["file"] = str((path.parent / file).resolve())
    return data


def load_recipe_dict(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The recipe at ``path`` with its ``base:`` chain merged in (base path relative to the file)."""
    path = Path(path).expanduser()
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise RecipeError([RecipeIssue(BASE_KEY, f"recipes inherit in a cycle: {chain}",
                                       "remove the cycle of base: references")])
    if len(_seen) > _MAX_DEPTH:
        raise RecipeError([RecipeIssue(BASE_KEY, "base: chain is too deep")])
    data = _anchor_split_file(_read_yaml(path), path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError([RecipeIssue(BASE_KEY, f"must be a file name, got {base!r}",
                                       "single inheritance: base: other.yaml")])
    base_path = Path(base).expanduser()
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    if not base_path.exists():
        raise RecipeError([RecipeIssue(BASE_KEY, f"base recipe not found: {base_path}",
                                       "paths in base: are relative to the recipe that names them")])
    parent = load_recipe_dict(base_path, (*_seen, resolved))
    return deep_merge(parent, data)


def parse_value(text: str) -> Any:
    """An override's value, read as YAML (``3``, ``[64, 64]``, ``null``); text that is not YAML stays text."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: ``3``, ``[64, 64]``, ``null``).

    Setting a component to a plain name (``model.decoder=spade``) switches the component and
    drops the old component's params; ``model.decoder.params.x=1`` then sets a param.
    """
    out = copy.deepcopy(data)
    issues = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            issues.append(RecipeIssue(key or item, f"override {item!r} is not key=value",
                                      "write dotted keys, e.g. train.epochs=3 or model.decoder=spade"))
            continue
        value = parse_value(raw)
        parts = key.split(".")
        node = out
        ok = True
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and parts[i + 1] in {"name", "params"}:
                child = node[part] = {"name": child}  # expand a component shorthand
            elif not isinstance(child, dict):
                issues.append(RecipeIssue(".".join(parts[: i + 1]),
                                          f"cannot set {key}: {'.'.join(parts[: i + 1])} is not a mapping"))
                ok = False
                break
            node = child
        if not ok:
            continue
        last = parts[-1]
        old = node.get(last)
        if isinstance(old, dict) and "name" in old and isinstance(value, str):
            node[last] = {"name": value} if value != old["name"] else old
        elif isinstance(old, dict) and isinstance(value, dict) and not _renames_component(old, value):
            node[last] = deep_merge(old, value)
        else:
            if last == "name" and isinstance(old, str) and old != value and "params" in node:
                node.pop("params")
            node[last] = value
    if issues:
        raise RecipeError(issues)
    return out


def _override_of(path: str, keys: dict[str, str]) -> str | None:
    """The override (``key=value``) an issue at ``path`` comes from: one that sets ``path``, a key
    below it (an unknown ``train.epcohs`` of ``train.epcohs.x=1``) or a mapping above it (the
    unknown name of ``model.decoder=spad`` at ``model.decoder.name``)."""
    for key, item in keys.items():
        if key == path or key.startswith(path + ".") or path.startswith(key + "."):
            return item
    return None


def attribute_overrides(issues: list[RecipeIssue], overrides: list[str] | tuple[str, ...]) -> list[RecipeIssue]:
    """``issues`` with those an override caused reported as the override's (``override
    'train.epcohs=3': unknown key train.epcohs; did you mean train.epochs?``), not the file's."""
    keys = {item.partition("=")[0].strip(): item for item in overrides if "=" in item}
    out = []
    for issue in issues:
        item = _override_of(issue.path, keys) if keys else None
        if item is None or issue.message.startswith("override "):
            out.append(issue)
            continue
        message = issue.message
        for unknown in ("unknown key", "unknown parameter", "unknown role", "unknown loss term"):
            if message.startswith(unknown):
                message = f"{unknown} {issue.path}{message[len(unknown):]}"
                break
        out.append(RecipeIssue(issue.path, f"override {item!r}: {message}",
                               issue.hint if issue.hint and not issue.hint.startswith("remove the key") else
                               "fix the override on the command line"))
    return out


def source_with_overrides(source: str, issues: list[RecipeIssue]) -> str:
    """Where ``issues`` are: the file ``source``, its overrides, or both."""
    from_overrides = [i.message.startswith("override ") for i in issues]
    if from_overrides and all(from_overrides):
        return f"the overrides of {source}"
    return f"{source} and its overrides" if any(from_overrides) else source


EVALUATION_OVERRIDE_SECTIONS = ("model", "method")
"""The recipe sections an evaluation override may change: the choices of the trained model."""

_NOT_FOR_EVALUATION = {
    "data": "chooses the data, and the data an export is evaluated on is chosen apart from its recipe "
            "(`dafnet evaluate --data/--split`; in an experiment, the source method's cells)",
    "train": "only affects training, and evaluation retrains nothing (the evaluation batch size is "
             "`dafnet evaluate --batch-size`)",
    "losses": "only affects training, and evaluation retrains nothing",
    "output": "only affects where training writes its run",
}


def evaluation_override_issues(overrides: list[str]) -> list[RecipeIssue]:
    """Problems of ``overrides`` meant for an evaluation of trained weights: only ``model.*`` and
    ``method.*`` keys can change what is evaluated (whether they fit the weights is checked when
    the weights are loaded); any other key would be accepted and change nothing."""
    issues = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.strip()
        section = key.split(".")[0]
        if section in EVALUATION_OVERRIDE_SECTIONS or not sep or not key:
            continue  # apply_overrides reports a malformed item
        why = _NOT_FOR_EVALUATION.get(section, "is not a choice of the trained model")
        issues.append(RecipeIssue(key, f"cannot be overridden when evaluating trained weights: {section} {why}",
                                  "override only model.* or method.* choices without weights, "
                                  "e.g. model.fuser.name=mean"))
    return issues
