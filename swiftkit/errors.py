"""The one error family users see: a message and an actionable hint.

The CLI prints it as one red line (no traceback unless --debug); the server maps it to an
OpenAI-shaped error with `status`.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
from collections.abc import Iterator
from pathlib import Path


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


# How a full disk surfaces: OSError(ENOSPC) from Python, the same text from Rust (safetensors, tokenizers),
# and torch.save's zip writer, which only notices a short write ("unexpected pos 447872 vs 447764").
_DISK_FULL_TEXT = re.compile(r"No space left on device|os error 28|Disk quota exceeded")
_SHORT_WRITE_TEXT = re.compile(r"unexpected pos \d+ vs \d+|file write failed")


@contextlib.contextmanager
def disk_full_is_one_line(output: str | Path) -> Iterator[None]:
    """A full disk while writing `output` becomes one SwiftkitError naming the path and the space left."""
    try:
        yield
    except SwiftkitError:
        raise
    except Exception as exc:
        where = _disk_full_path(exc, Path(output))
        if where is None:
            raise
        raise SwiftkitError(
            f"disk full while writing {where} ({_free_space(where)} free there now)",
            "free some space (or choose another --output) and run it again; sft and dpo continue from their last "
            "complete checkpoint with --resume",
        ) from exc


def _disk_full_path(exc: BaseException | None, output: Path) -> Path | None:
    """The path being written when `exc` (or an exception it was raised from) means the disk is full."""
    for _ in range(8):  # the exception and what it was raised from, not an unbounded walk
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return Path(exc.filename) if exc.filename else output
        text = str(exc)
        if _DISK_FULL_TEXT.search(text):
            return output
        # A short write means a full disk only when the disk is in fact (almost) full.
        if _SHORT_WRITE_TEXT.search(text) and shutil.disk_usage(_existing(output)).free < 16 * 2**20:
            return output
        exc = exc.__cause__ or exc.__context__
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_space(path: Path) -> str:
    return f"{shutil.disk_usage(_existing(path)).free / 2**20:.1f} MiB"
