"""The error every user-caused problem raises: a message and a hint; the CLI exits 2."""

from __future__ import annotations


class DafnetError(Exception):
    """A problem the user can fix. The CLI prints ``message`` and ``hint`` and exits 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"
