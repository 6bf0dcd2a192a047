"""The base of every recipe section: unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


__all__ = ["Strict"]
