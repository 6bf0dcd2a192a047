"""A method's roles: each built from the component its context names (:func:`build_role`), and
what they return checked (:func:`checked`), so a component that breaks its contract is named at
once (``Method.summary``, which the engine runs before training) instead of failing later inside
a loss, or not at all."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dafnet.builder import build_and_declare
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Method

_HINT = ("docs/plugins.md gives each kind's contract; dafnet.testing.check_component(kind, name) "
         "checks one component alone")


def build_role(method: Method, role: str, facts: Facts, path: str | None = None) -> tuple[Any, Facts]:
    """(the component of ``role``, ``facts`` extended by what it declares); errors name ``path``
    (default ``model.<role>``)."""
    choice = method.component(role)
    return build_and_declare(method.roles[role].kind, choice.name, choice.build_params, facts, path or f"model.{role}")


def _fmt(shape) -> str:
    if shape is None:
        return "(1, ...)"
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"


def checked(role: str, component: str, out: Any, shape: tuple[int | None, ...] | None,
            field: str | None = None) -> Tensor:
    """``out`` (or ``out.<field>`` for typed outputs) as a tensor of ``shape`` (a None entry: any
    size; ``shape`` None: any tensor of batch 1); a :class:`DafnetError` naming the role and its
    component otherwise."""
    who = f"{role} {component!r}"
    if field is not None:
        if not hasattr(out, field):
            raise DafnetError(f"{who} returned {type(out).__name__}, which has no .{field}: its kind returns a typed "
                              "output (see dafnet.interfaces)", hint=_HINT)
        out = getattr(out, field)
        who += f" (.{field})"
    if not isinstance(out, Tensor):
        raise DafnetError(f"{who} returned {type(out).__name__}, expected a tensor of shape {_fmt(shape)}", hint=_HINT)
    got = tuple(out.shape)
    if shape is None:
        shape = (1,) + (None,) * max(len(got) - 1, 0)
    if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
        raise DafnetError(f"{who} returned a tensor of shape {got}, expected {_fmt(shape)} "
                          "(batch 1 at the recipe's image size)", hint=_HINT)
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise DafnetError(f"{who} returned non-finite values (NaN or inf) for an all-zero input", hint=_HINT)
    return out


def shape_text(t: Tensor) -> str:
    return "x".join(str(d) for d in t.shape)
