"""One writer per output: an exclusive lock held while a run builds an artifact directory.

Two runs on the same `--output` would otherwise clear, overwrite and rename each other's partial
directory (and checkpoints). The lock is `flock` on `.<name>.lock` next to the output: the kernel
drops it when the process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from swiftkit.errors import ArtifactError

# Set while a process holds a lock, so processes it starts (torchrun workers) write under it.
INHERITED = "SWIFTKIT_OUTPUT_LOCK"
_held: dict[Path, int] = {}  # lock file -> how many nested holders in this process


def lock_path(output: str | Path) -> Path:
    final = Path(output).resolve()
    return final.parent / f".{final.name}.lock"


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold the lock on `output` (re-entrant in one process); refuse at once if another run holds it."""
    path = lock_path(output)
    if path in _held or os.environ.get(INHERITED) == str(path):
        _held[path] = _held.get(path, 0) + 1
        try:
            yield
        finally:
            _held[path] -= 1
            if not _held[path]:
                del _held[path]
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, Path(output).resolve())
    _held[path] = 1
    outer = os.environ.get(INHERITED)
    os.environ[INHERITED] = str(path)
    try:
        yield
    finally:
        del _held[path]
        if outer is None:
            os.environ.pop(INHERITED, None)
        else:
            os.environ[INHERITED] = outer
        # Unlink while still locked: a waiting run that opened the old file notices (see _acquire).
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()


def _acquire(path: Path, output: Path):
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise ArtifactError(
                f"{output} is being written by another run (pid {holder})",
                "wait for it to finish, or choose another --output",
            ) from None
        # The holder before us may have unlinked the file between our open and our flock; then our
        # lock is on a deleted file and means nothing: open the new one.
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()
