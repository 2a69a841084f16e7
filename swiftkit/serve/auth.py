"""API-key check: `Authorization: Bearer KEY` on the OpenAI routes; health, metrics and docs stay open."""

from __future__ import annotations

import hmac

OPEN_PATHS = ("/health", "/metrics", "/version", "/docs", "/redoc", "/openapi.json")


def needs_key(path: str) -> bool:
    return not path.startswith(OPEN_PATHS)


def key_ok(expected: str, authorization: str | None) -> bool:
    """Constant-time comparison of the bearer token (the OpenAI SDKs send `Bearer KEY`)."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[len("Bearer "):].strip().encode(), expected.encode())
