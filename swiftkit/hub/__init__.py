"""Model transfer with the Hugging Face hub and ModelScope: download, push, the local model cache.

`ensure_local` is what `--model org/name[@rev]` resolves through (swiftkit.resolve).
"""

from __future__ import annotations

from pathlib import Path


def ensure_local(ref: str) -> Path:
    """The local artifact of hub id `org/name[@rev]`: from the cache, else downloaded into it."""
    from swiftkit.hub.cache import ensure_local as _ensure_local

    return _ensure_local(ref)
