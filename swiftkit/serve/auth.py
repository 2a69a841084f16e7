"""API-key check: `Authorization: Bearer KEY` on the OpenAI routes; health, metrics and docs stay open."""

from __future__ import annotations

import hmac

OPEN_PATHS = ("/health", "/metrics", "/version", "/docs", "/redoc", "/openapi.json")


def needs_key(path: str) -> bool:
    return not path.startswith(OPEN_PATHS)


def key_ok(expected: str, authorization: bytes | None) -> bool:
    """Constant-time comparison of the bearer token (the OpenAI SDKs send `Bearer KEY`).

    Compared as bytes: HTTP carries header values as bytes, and a non-ASCII key arrives as its UTF-8
    (decoding the header as latin-1 and encoding the key as UTF-8 could never match).
    """
    if not authorization or not authorization.startswith(b"Bearer "):
        return False
    return hmac.compare_digest(authorization[len(b"Bearer "):].strip(), expected.encode("utf-8"))
