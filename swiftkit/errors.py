"""The one error family users see: a message and an actionable hint.

The CLI prints it as one red line (no traceback unless --debug); the server maps it to an
OpenAI-shaped error with `status`.
"""

from __future__ import annotations


class SwiftkitError(Exception):
    """A problem the user can fix. `status` is the HTTP status the server should use."""

    status = 400

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class DataError(SwiftkitError):
    """Malformed training / preference / calibration data (names file, row and problem)."""


class ArtifactError(SwiftkitError):
    """A model reference or artifact that cannot be resolved or is incomplete."""
