"""API-key checks: `Authorization: Bearer KEY` on the OpenAI routes; health, metrics and docs stay open.

Three kinds of key: the shared `--api-key`, the `--admin-key` (also needed for the admin routes), and
tenant keys from the database (`swiftkit keys create`, looked up by hash in serve/tenancy.py).
"""

from __future__ import annotations

import hmac

OPEN_PATHS = ("/health", "/metrics", "/version", "/docs", "/redoc", "/openapi.json", "/ui/")
ADMIN_PATHS = ("/v1/admin/", "/v1/load_lora_adapter", "/v1/unload_lora_adapter")


def needs_key(path: str) -> bool:
    """The playground's page (/ and /ui/) is open: it holds no data and sends the key its user types in."""
    return not (path == "/" or path.startswith(OPEN_PATHS))


def is_admin_path(path: str) -> bool:
    return path.startswith(ADMIN_PATHS)


def bearer(authorization: bytes | None) -> bytes | None:
    """The token of `Bearer TOKEN` (the OpenAI SDKs send it so), as bytes."""
    if not authorization or not authorization.startswith(b"Bearer "):
        return None
    return authorization[len(b"Bearer "):].strip()


def matches(token: bytes | None, expected: str | None) -> bool:
    """Constant-time comparison of a bearer token with a configured key.

    Compared as bytes: HTTP carries header values as bytes, and a non-ASCII key arrives as its UTF-8
    (decoding the header as latin-1 and encoding the key as UTF-8 could never match).
    """
    if token is None or not expected:
        return False
    return hmac.compare_digest(token, expected.encode("utf-8"))

