"""A guard hook as a user writes one (`--guard tests.serve.guard_hooks:guard`), for tests/serve/test_guards.py."""

from __future__ import annotations

import re

from swiftkit.serve.guards import Reject

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def guard(phase: str, payload: dict, context: dict) -> dict | None:
    if phase == "request":
        if payload.get("prompt") == "reject me":
            raise Reject("this prompt is refused by the test guard")
        if payload.get("prompt") == "crash me":
            raise RuntimeError("a bug in the guard")
        if "messages" in payload:  # PII redaction: e-mail addresses never reach the model (or the audit log)
            for m in payload["messages"]:
                if isinstance(m.get("content"), str):
                    m["content"] = EMAIL.sub("[email]", m["content"])
            return payload
        return None
    if context["tenant"] == "quiet":
        raise Reject("responses to this tenant are withheld by the test guard")
    return {**payload, "system_fingerprint": "guarded"}
