"""The shared steps of every contract check: resolve, validate Params, build, report.

Every failure is an ``AssertionError`` whose message says which component, what was
checked, what was expected and what was found.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from dafnet.interfaces.base import Params
from dafnet.interfaces.facts import Facts
from dafnet.registry import KINDS, RegistryError, _import_target, registry

DEFAULT_FACTS = Facts(
    image_size=(32, 32),
    image_channels=1,
    modalities=("a", "b"),
    num_classes=3,
    class_names=("class1", "class2", "class3"),
    anatomy_channels=4,
    z_dim=4,
    num_candidates=2,
    critic_channels=3,
)
"""Tiny facts every check builds with unless the caller passes its own."""

_KIND_FACTS: dict[str, dict[str, Any]] = {
    # Unpadded 4x4 stride-2 critics (the paper's) need more than 32 px to end with a map.
    "discriminator": {"image_size": (64, 64)},
    # A data source is the first component: it is told nothing.
    "data_source": {},
}


def default_facts(kind: str) -> Facts:
    """The facts a check of ``kind`` uses by default (data sources get empty facts)."""
    if kind == "data_source":
        return Facts()
    return DEFAULT_FACTS.with_(**_KIND_FACTS.get(kind, {}))


@dataclass(frozen=True)
class ContractReport:
    """What a passed contract check established about one component."""

    kind: str
    name: str
    """The registry name, or ``module:Class`` when a class was given."""
    target: str
    """``module:Class`` of the checked class."""
    params: BaseModel
    facts: Facts
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Name of each checked output -> its shape (first call)."""
    trainable_parameters: int = 0
    checks: tuple[str, ...] = ()
    """The properties that were verified, in order."""

    def __str__(self) -> str:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in self.outputs.items())
        return (f"{KINDS[self.kind].title} {self.name!r} ({self.target}): {len(self.checks)} checks "
                f"passed; {self.trainable_parameters} trainable parameters; {shapes}")


class Contract:
    """Collects the passed checks of one component and raises precise failures."""

    def __init__(self, kind: str, label: str) -> None:
        self.kind = kind
        self.label = label
        self.passed: list[str] = []

    def fail(self, what: str, expected: Any, got: Any) -> None:
        raise AssertionError(f"{self.label}: {what}: expected {expected}, got {got}")

    def expect(self, condition: bool, what: str, expected: Any, got: Any) -> None:
        """Record ``what`` as passed, or fail; ``got`` may be a lambda, called only on failure."""
        if not condition:
            self.fail(what, expected, got() if _is_lazy(got) else got)
        self.passed.append(what)

    def ok(self, what: str) -> None:
        self.passed.append(what)


def _is_lazy(value: Any) -> bool:
    return callable(value) and getattr(value, "__name__", "") == "<lambda>"


def _target_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(kind: str, name_or_class: str | type) -> tuple[str, type]:
    """(display name, class): a registry name, ``module:Class``, or a class."""
    if kind not in KINDS:
        raise AssertionError(f"unknown component kind {kind!r}: expected one of {', '.join(KINDS)}")
    title = KINDS[kind].title
    if isinstance(name_or_class, str):
        try:
            cls = registry(kind).get(name_or_class)
        except RegistryError as exc:
            raise AssertionError(f"{title} {name_or_class!r} could not be resolved: {exc}") from exc
        name = name_or_class
    elif isinstance(name_or_class, type):
        cls = name_or_class
        name = _target_of(cls)
        base = _import_target(KINDS[kind].base)
        if not issubclass(cls, base):
            raise AssertionError(
                f"{title} {name}: base class: expected a subclass of dafnet.interfaces."
                f"{base.__qualname__}, got bases {[b.__qualname__ for b in cls.__mro__[1:-1]]}")
    else:
        raise AssertionError(f"{title}: expected a registry name or a class, got {name_or_class!r}")
    if inspect.isabstract(cls):
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        raise AssertionError(f"{title} {name}: abstract methods: expected all implemented, "
                             f"got unimplemented {missing}")
    return name, cls


def check_params(contract: Contract, cls: type, params: dict | BaseModel | None,
                 required_params: tuple[str, ...] = ()) -> BaseModel:
    """Check ``cls.Params`` follows the conventions and return the validated ``params``.

    ``required_params`` names fields that deliberately have no default (e.g. a dataset
    folder); the caller must then give them in ``params``. Every other field needs a default.
    """
    model = getattr(cls, "Params", None)
    contract.expect(isinstance(model, type) and issubclass(model, Params), "Params model",
                    "a nested class deriving dafnet.interfaces.Params", model)
    config = model.model_config
    contract.expect(config.get("extra") == "forbid", "Params extra keys", "extra='forbid'",
                    f"extra={config.get('extra')!r}")
    contract.expect(bool(config.get("frozen")), "Params frozen", "frozen=True",
                    f"frozen={config.get('frozen')!r}")
    unknown = [n for n in required_params if n not in model.model_fields]
    contract.expect(not unknown, "required_params", f"fields of {model.__qualname__}", f"unknown {unknown}")
    missing = [n for n, f in model.model_fields.items() if f.is_required() and n not in required_params]
    contract.expect(not missing, "Params defaults (Params() must validate)",
                    "a default for every field", f"no default for {missing}")
    undocumented = [n for n, f in model.model_fields.items() if not (f.description or "").strip()]
    contract.expect(not undocumented, "Params field descriptions",
                    "Field(..., description=...) on every field", f"none on {undocumented}")
    given = params.model_dump() if isinstance(params, BaseModel) else dict(params or {})
    absent = [n for n in required_params if n not in given]
    contract.expect(not absent, "required params given", f"values for {list(required_params)}",
                    f"none for {absent}")
    try:
        chosen = params if isinstance(params, model) else model.model_validate(given)
    except ValidationError as exc:
        what = "given params" if params is not None else "Params defaults (Params() must validate)"
        contract.fail(what, f"valid {model.__qualname__}", str(exc))
    try:
        model.model_validate({**chosen.model_dump(), "__not_a_param__": 1})
    except ValidationError:
        contract.ok("Params rejects unknown keys")
    else:
        contract.fail("Params rejects unknown keys", "a ValidationError for an unknown key",
                      "the key was accepted")
    again = model.model_validate(chosen.model_dump(mode="json"))
    contract.expect(again == chosen, "Params JSON round trip (as a recipe writes them)",
                    chosen, again)
    return chosen


def build(contract: Contract, cls: type, params: BaseModel, facts: Facts):
    """``cls(params, facts)``, with the facts in the message when it fails."""
    try:
        component = cls(params, facts)
    except Exception as exc:  # reported with context
        raise AssertionError(f"{contract.label}: construction Cls(params, facts) failed with "
                             f"{type(exc).__name__}: {exc} (params {params!r}, facts {facts!r})") from exc
    contract.ok("builds as Cls(params, facts)")
    declared = component.declared_facts()
    unknown = [k for k in declared if k not in Facts.__dataclass_fields__]
    contract.expect(isinstance(declared, dict) and not unknown, "declared_facts keys",
                    "names of Facts fields", f"unknown {unknown}" if unknown else declared)
    return component


def start(kind: str, name_or_class: str | type, params, facts: Facts | None,
          required_params: tuple[str, ...] = ()):
    """Resolve and validate; returns (contract, name, class, params, facts)."""
    name, cls = resolve_class(kind, name_or_class)
    label = f"{KINDS[kind].title} {name!r} ({_target_of(cls)})" if isinstance(name_or_class, str) \
        else f"{KINDS[kind].title} {name}"
    contract = Contract(kind, label)
    chosen = check_params(contract, cls, params, tuple(required_params))
    return contract, name, cls, chosen, facts if facts is not None else default_facts(kind)


def report(contract: Contract, name: str, cls: type, params: BaseModel, facts: Facts,
           outputs: dict | None = None, trainable: int = 0) -> ContractReport:
    return ContractReport(kind=contract.kind, name=name, target=_target_of(cls), params=params,
                          facts=facts, outputs=dict(outputs or {}), trainable_parameters=trainable,
                          checks=tuple(dict.fromkeys(contract.passed)))
