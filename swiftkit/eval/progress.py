"""One progress display per eval: task, requests done/total, tok/s, ETA (lm-eval's tqdm bars silenced).

Works for every backend without knowing its internals: lm-eval's request cache hands each LM a
hook that the LM calls once per finished request (`cache_hook.add_partial`), and lm-eval calls
`loglikelihood` / `loglikelihood_rolling` / `generate_until` once per request type with every
remaining request. Both are wrapped on the LM instance: a call starts a phase (its total and task
names), each finished request advances it, with the tokens it scored or generated.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from swiftkit.console import progress

KINDS = {"loglikelihood": "scoring", "loglikelihood_rolling": "scoring", "generate_until": "generating"}


class EvalProgress:
    def __init__(self, lm: Any, label: str):
        self.lm, self.label = lm, label
        self.bar = progress()
        self.row = None
        self.kind = ""
        self.tokens = 0
        self.started = 0.0
        self.encode = getattr(lm, "tok_encode", None) if getattr(lm, "tokenizer", None) is not None else None
        self.phases: list[dict] = []  # per request type: requests, tokens, seconds (recorded in the artifact)

    def attach(self) -> None:
        lm = self.lm
        set_hook = lm.set_cache_hook
        lm.set_cache_hook = lambda hook: set_hook(_CountingHook(hook, self))
        for attr in KINDS:
            method = getattr(lm, attr)
            setattr(lm, attr, self._phase(attr, method))

    def _phase(self, attr: str, method):
        def run(requests, *args, **kwargs):
            names = list(dict.fromkeys(getattr(r, "task_name", None) or "?" for r in requests))
            tasks = names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1} more"
            self.kind, self.tokens, self.started = KINDS[attr], 0, time.monotonic()
            self.row = self.bar.add_task(f"{self.label}: {tasks}", total=len(requests), info=self.kind)
            results = method(requests, *args, **kwargs)
            seconds = time.monotonic() - self.started
            self.phases.append({"kind": attr, "tasks": names, "requests": len(requests), "tokens": self.tokens,
                                "seconds": round(seconds, 2)})
            return results

        return run

    def done(self, attr: str, request: Any, result: Any) -> None:
        """One request finished: count its tokens (scored text, or generated text)."""
        if self.row is None or attr not in KINDS:
            return
        if self.encode is not None:
            text = "".join(request) if attr == "loglikelihood" else result if attr == "generate_until" else request[0]
            if isinstance(text, str):
                self.tokens += len(self.encode(text))
        rate = self.tokens / max(time.monotonic() - self.started, 1e-9)
        info = f"{self.kind} {rate:,.0f} tok/s" if self.encode is not None else self.kind
        self.bar.update(self.row, advance=1, info=info)


class _CountingHook:
    """lm-eval's cache hook, plus a tick of the display per finished request."""

    def __init__(self, hook, display: EvalProgress):
        self.hook, self.display = hook, display

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.hook.add_partial(attr, req, res)
        self.display.done(attr, req, res)


@contextlib.contextmanager
def quiet_tqdm() -> Iterator[None]:
    """Every tqdm bar created inside (lm-eval's "Checking cached requests", "Running ... requests") is disabled."""
    from tqdm import std

    original = std.tqdm.__init__

    def silent(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = silent
    try:
        yield
    finally:
        std.tqdm.__init__ = original


@contextlib.contextmanager
def eval_progress(lm: Any, label: str) -> Iterator[EvalProgress]:
    display = EvalProgress(lm, label)
    display.attach()
    with quiet_tqdm(), display.bar:
        yield display
