"""Recipe errors: every problem at once, each with its YAML path, what is wrong and a hint."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from dafnet.errors import DafnetError


@dataclass(frozen=True)
class RecipeIssue:
    path: str
    """Dotted YAML path, e.g. ``model.decoder.params.channels`` (``<recipe>`` for the file)."""
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        return text + (f" (hint: {self.hint})" if self.hint else "")


class RecipeError(DafnetError):
    """One or more problems in a recipe; the CLI prints them all and exits 2."""

    def __init__(self, issues: list[RecipeIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"{len(self.issues)} problem(s) in recipe" + (f" {source}" if source else "")
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in self.issues))

    def with_source(self, source: str) -> RecipeError:
        return RecipeError(self.issues, source)


_HINTS = {
    "extra_forbidden": "remove the key, or check its spelling against `dafnet validate` output / docs/recipes.md",
    "missing": "add this key",
    "int_parsing": "give a whole number",
    "int_from_float": "give a whole number",
    "float_parsing": "give a number",
    "bool_parsing": "give true or false",
    "literal_error": None,
    "greater_than": None,
    "greater_than_equal": None,
    "less_than_equal": None,
}


FIELD_MARK = "@"
"""A model validator's ``ValueError("@target: ...")`` files its problem under that field."""


def _join(prefix: str, loc: tuple) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{item}]"
            else:
                parts.append(f"[{item}]")
        else:
            parts.append(str(item))
    return ".".join(parts) or "<recipe>"


def _union_choices(errors: list[dict]) -> list[dict]:
    """pydantic reports a value that fits no member of a union once per member, with the member's
    tag (``constrained-int``, ``tuple[int, int]``) as the last location item: merge those into one
    error at the field itself ("Input should be a valid integer, or a valid tuple")."""
    groups: dict[tuple, list[dict]] = {}
    for err in errors:
        groups.setdefault(err["loc"][:-1], []).append(err)
    merged, done = [], set()
    for err in errors:
        key = err["loc"][:-1]
        members = groups[key]
        is_union = (len(members) > 1 and "input" in err and all(isinstance(m["loc"][-1], str) for m in members)
                    and all(m.get("input", object()) is err["input"] or m.get("input") == err["input"]
                            for m in members) and len({m["loc"][-1] for m in members}) == len(members)
                    and any(not str(m["loc"][-1]).isidentifier() for m in members))
        if not is_union:
            merged.append(err)
        elif key not in done:
            done.add(key)
            said = list(dict.fromkeys(m["msg"].split(",")[0] for m in members))
            text = ("Input should be " + " or ".join(m.removeprefix("Input should be ") for m in said)
                    if all(m.startswith("Input should be ") for m in said) else "; or ".join(said))
            merged.append({**err, "loc": key, "type": "union", "msg": text})
    return merged


def _model_of(annotation: Any) -> Any:
    """The pydantic model an annotation holds (through ``X | None``), ``("dict", model)`` for a
    mapping of models, or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2:
        inner = _model_of(args[1])
        return ("dict", inner) if inner is not None else None
    if origin is Union or type(annotation).__name__ == "UnionType":
        for arg in args:
            if (inner := _model_of(arg)) is not None:
                return inner
    return None


def known_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The field names of ``model`` at the location ``loc`` (keys of mappings and list indices
    skipped); [] when the location is not a model's."""
    node: Any = model
    for part in loc:
        if node is None:
            return []
        if isinstance(node, tuple):  # a mapping of models: ``part`` is its key
            node = node[1]
            continue
        if isinstance(part, int):
            continue
        field = node.model_fields.get(part)
        if field is None:
            return []
        node = _model_of(field.annotation)
    return list(node.model_fields) if node is not None and not isinstance(node, tuple) else []


def did_you_mean(key: str, known: list[str], where: str = "") -> str:
    """``"; did you mean WHERE.MATCH?"`` for the closest of ``known`` to ``key``, or ``""``."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {where + '.' if where else ''}{close[0]}?" if close else ""


def issues_from_validation(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None,
                           ) -> list[RecipeIssue]:
    """Translate pydantic's errors to recipe issues with full dotted paths; an unknown key of
    ``model`` (the validated model) gets the closest known key at its level as a suggestion."""
    issues = []
    for err in _union_choices(exc.errors(include_url=False)):
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            where = _join(prefix, loc[:-1]) if prefix or loc[:-1] else ""
            msg = "unknown key" + (did_you_mean(str(loc[-1]), known_keys(model, loc[:-1]), where)
                                   if model is not None and loc else "")
        elif err["type"] == "value_error":  # our own validators' messages say what they got
            msg = msg.removeprefix("Value error, ")
            if msg.startswith(FIELD_MARK):  # a cross-field check that names the key at fault
                key, _, msg = msg[len(FIELD_MARK):].partition(": ")
                loc = (*loc, *key.split("."))
        elif "input" in err and err["type"] not in {"missing"}:
            shown = repr(err["input"])
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = f"{msg} (got {shown})"
        issues.append(RecipeIssue(_join(prefix, loc), msg, _HINTS.get(err["type"])))
    return issues
