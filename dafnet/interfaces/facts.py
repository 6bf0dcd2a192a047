"""Shape facts: what one component tells the components built after it.

A recipe states each number once. The data source declares the image size, the
modalities and the classes; the anatomy encoder declares how many anatomy channels
it produces; the modality encoder declares the size of z; the method declares how
many pairing candidates it uses. The builder threads one :class:`Facts` through the
components in that order, so a decoder never asks the recipe for the number of
anatomy channels: it reads ``facts.require("anatomy_channels")``.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, fields

from dafnet.errors import DafnetError


class MissingFactError(DafnetError):
    """A component needs a fact that no earlier component declared."""


class UnknownFactError(MissingFactError, AttributeError):
    """A component asked for a fact that does not exist (``hasattr`` stays False)."""


@dataclass(frozen=True)
class Facts:
    image_size: tuple[int, int] | None = None
    """(height, width) of every 2D slice fed to the networks."""
    image_channels: int = 1
    """Channels of one image (1 for MR)."""
    modalities: tuple[str, ...] | None = None
    """Names of the modalities, in a fixed order (index i is modality i)."""
    num_classes: int | None = None
    """Foreground classes L (the background is not counted)."""
    class_names: tuple[str, ...] | None = None
    """Names of the L foreground classes."""
    anatomy_channels: int | None = None
    """C, the channels of the anatomy factor s."""
    z_dim: int | None = None
    """n_z, the size of the modality factor z."""
    num_candidates: int = 1
    """k, candidate slices per pair for the pairing head (1 = expert pairing)."""
    critic_channels: int | None = None
    """Channels of what a discriminator judges (L for masks, 1 for images); set per role."""

    def __getattr__(self, name: str):  # only called for names that are not fields
        if name.startswith("__"):
            raise AttributeError(name)
        known = ", ".join(f.name for f in fields(self))
        close = difflib.get_close_matches(name, [f.name for f in fields(self)], n=1)
        raise UnknownFactError(f"there is no fact {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                               hint=f"facts: {known}")

    def require(self, name: str):
        """Return a fact, or raise a clear error when no component declared it."""
        value = getattr(self, name)
        if value is None:
            raise MissingFactError(
                f"fact {name!r} is not known yet: it is declared by an earlier component "
                "(data source: image_size, modalities, num_classes; anatomy encoder: "
                "anatomy_channels; modality encoder: z_dim). Build components in that order."
            )
        return value

    @property
    def num_modalities(self) -> int:
        return len(self.require("modalities"))

    def with_(self, **changes) -> Facts:
        """A copy with some facts declared or replaced."""
        return dataclasses.replace(self, **changes)
