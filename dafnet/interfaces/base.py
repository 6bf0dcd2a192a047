"""The base every registered component shares: a pydantic ``Params`` model."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Parameters of a component as a recipe states them.

    Subclass it per component. Unknown keys are errors, values are validated, and the
    field descriptions are what ``dafnet plugins info NAME`` shows.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Component:
    """Mixin of every registered component: a ``Params`` model and one constructor.

    Every component is built as ``Cls(params, facts)`` where ``params`` is an instance of
    ``Cls.Params`` and ``facts`` is the :class:`~dafnet.interfaces.facts.Facts` known so far.
    """

    Params: ClassVar[type[Params]] = Params
    """The component's parameter model. Override with a subclass of :class:`Params`."""

    def declared_facts(self) -> dict:
        """Facts this component declares for the components built after it."""
        return {}
