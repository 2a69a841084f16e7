"""Guard hooks: look at (and rewrite or reject) a request before it runs, and a response before it is sent.

`--guard module:function` (repeatable) names a function called as `function(phase, payload, context)`:
`phase` is "request" (payload: the request body as a dict) or "response" (payload: the JSON response of a
non-streamed request); `context` has the endpoint, model and tenant. It returns None to pass the payload on
unchanged, a dict to replace it, or raises `Reject("why")` to refuse it with a 400 (`code: content_blocked`),
which the usage log records. `--blocklist REGEX` (repeatable, case-insensitive) is the built-in guard: a
request whose text (messages, prompt, input, instructions) or a non-streamed response whose text matches is
refused the same way. Streamed responses are checked on the request side only: their tokens are on the wire
before the response is whole.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from swiftkit.console import console
from swiftkit.errors import SwiftkitError
from swiftkit.serve.errors import BadRequest

GUARDED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings")
Guard = Callable[[str, dict, dict], "dict | None"]


class Reject(BadRequest):
    """Raised by a guard: the request (or its response) is refused with this message."""

    def __init__(self, message: str):
        super().__init__(message, code="content_blocked")


class GuardFailed(BadRequest):
    """A guard raised something other than Reject: the server's fault, an OpenAI-shaped 500."""

    status = 500
    type = "internal_error"


def load_guard(spec: str) -> Guard:
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise SwiftkitError(f"--guard {spec!r} is not module:function", "e.g. --guard mycompany.guards:pii")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SwiftkitError(f"--guard {spec}: {exc}", "the module must be importable (on PYTHONPATH)") from None
    if not callable(fn):
        raise SwiftkitError(f"--guard {spec} is not a function")
    return fn


def texts(value: Any) -> list[str]:
    """Every string a request or response carries as content (message contents, text parts, prompts, outputs)."""
    found: list[str] = []

    def walk(v: Any, key: str | None) -> None:
        if isinstance(v, str):
            if key in ("content", "text", "prompt", "input", "instructions", "arguments", "output"):
                found.append(v)
        elif isinstance(v, list):
            for item in v:
                walk(item, key if key in ("prompt", "input") else None)
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(item, k)

    walk(value, None)
    return found


class Guards:
    def __init__(self, specs: list[str], blocklist: list[str]):
        self.hooks = [load_guard(s) for s in specs]
        try:
            self.patterns = [re.compile(p, re.IGNORECASE) for p in blocklist]
        except re.error as exc:
            raise SwiftkitError(f"--blocklist pattern {exc.pattern!r}: {exc}") from None

    def checked(self, phase: str, payload: dict, context: dict) -> dict | None:
        """`run`, with a guard's own bug turned into GuardFailed (logged) instead of a bare 500."""
        try:
            return self.run(phase, payload, context)
        except Reject:
            raise
        except Exception as exc:
            console.print(f"[red]guard failed[/] on the {phase}: {type(exc).__name__}: {exc}")
            raise GuardFailed(f"a guard failed on the {phase}: {type(exc).__name__}") from None

    def run(self, phase: str, payload: dict, context: dict) -> dict | None:
        """The payload to use instead (None: unchanged); raises Reject."""
        changed = None
        for i, pattern in enumerate(self.patterns):
            if any(pattern.search(t) for t in texts(payload)):
                what = "request" if phase == "request" else "response"
                raise Reject(f"the {what} matches blocked pattern #{i + 1} (--blocklist)")
        for hook in self.hooks:
            out = hook(phase, changed if changed is not None else payload, context)
            if out is not None:
                if not isinstance(out, dict):
                    raise TypeError(f"guard {hook.__module__}.{hook.__name__} returned {type(out).__name__}, not a dict")
                changed = out
        return changed
