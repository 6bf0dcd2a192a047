"""The error every user-caused problem raises: a message and a hint; the CLI exits 2."""

from __future__ import annotations


class DafnetError(Exception):
    """A problem the user can fix. The CLI prints ``message`` and ``hint`` and exits 2."""

    key: str | None = None
    """The recipe key whose component failed to build, when known (set by :func:`dafnet.builder.build`)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class TrainingFailed(DafnetError):
    """A run that trains but does not learn (a training health check tripped, docs/engine.md):
    the run folder keeps its log and state and gets ``failed.json``; nothing is exported."""

    def __init__(self, message: str, hint: str | None = None, *, check: str, epoch: int,
                 details: dict | None = None) -> None:
        super().__init__(message, hint)
        self.check = check
        """Which check tripped: ``non_finite``, ``dice_floor``, ``loss_not_falling`` or ``loss_rebound``."""
        self.epoch = epoch
        self.details = details or {}
        """The numbers the check read."""


class WriteFailed(DafnetError):
    """A file or folder could not be written (disk full, no permission, ...); ``path`` is the one
    that was being written. Whatever was staged for it has been removed."""

    def __init__(self, message: str, hint: str | None = None, *, path) -> None:
        super().__init__(message, hint)
        self.path = path
