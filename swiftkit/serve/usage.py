"""The usage/audit record of each request, and the writer that batches records into the database.

The gate opens a `RequestRecord` per request and makes it the current one (a context variable, so the
handler and its streaming body, which run in tasks copied from the gate's context, fill the same
object: tokens, time to first token, response text). The finished record goes into a bounded buffer;
a writer thread inserts the buffer in batches, off the request path. `close()` (after the drain)
writes what is left, so no record of a finished request is lost on SIGTERM; when the buffer is full
(the database is slower than the traffic) a record is dropped and counted, never waited for.
"""

from __future__ import annotations

import collections
import contextvars
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from swiftkit.console import console
from swiftkit.serve import db

current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("swiftkit_request", default=None)


@dataclass
class RequestRecord:
    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    time: Any = field(default_factory=db.now)
    tenant: str | None = None
    key_id: str | None = None
    model: str | None = None
    adapter: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    status: int = 500
    error_type: str | None = None
    request: str | None = None  # set only with --audit-content
    texts: list[str] = field(default_factory=list)

    def row(self, latency: float) -> dict:
        response = None
        if self.request is not None and self.texts:
            response = self.texts[0] if len(self.texts) == 1 else json.dumps(self.texts, ensure_ascii=False)
        return {"time": self.time, "tenant": self.tenant, "key_id": self.key_id, "model": self.model,
                "adapter": self.adapter, "endpoint": self.endpoint, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "latency_s": latency, "ttft_s": self.ttft_s,
                "status": self.status, "error_type": self.error_type, "request": self.request,
                "response": response}


def record_tokens(prompt: int, completion: int, texts: list[str] = ()) -> None:
    """Add a run's token counts (and its generated texts) to the current request's record."""
    rec = current.get()
    if rec is None:
        return
    rec.prompt_tokens += prompt
    rec.completion_tokens += completion
    if rec.request is not None:  # content is audited (the request was kept): keep the answer
        rec.texts += texts


def first_token() -> None:
    rec = current.get()
    if rec is not None and rec.ttft_s is None:
        rec.ttft_s = time.perf_counter() - rec.started


def record_error(type_: str) -> None:
    """An error after the response began (a stream's error event): the status stays 200, the type says it."""
    rec = current.get()
    if rec is not None:
        rec.error_type = type_


class UsageLog:
    """Bounded buffer + writer thread: `add()` never blocks the request path."""

    def __init__(self, engine, capacity: int, on_drop, batch: int = 500, interval: float = 0.2):
        self.engine, self.capacity, self.on_drop = engine, capacity, on_drop
        self.batch, self.interval = batch, interval
        self._rows: collections.deque[dict] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()  # one writer at a time (the thread, or close())
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="swiftkit-usage", daemon=True)
        self._thread.start()

    def add(self, row: dict) -> None:
        if len(self._rows) >= self.capacity:
            self.dropped += 1
            self.on_drop()
            return
        self._rows.append(row)  # deque.append is atomic: the event loop never takes a lock here
        if len(self._rows) >= self.batch:
            self._wake.set()

    def pending(self) -> int:
        return len(self._rows)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # the database is down: keep the rows (bounded), try again
                console.print(f"[red]usage log:[/] cannot write to the database: {type(exc).__name__}: {exc}")
                time.sleep(1.0)

    def flush(self) -> None:
        with self._lock:
            while self._rows:
                rows = [self._rows.popleft() for _ in range(min(self.batch, len(self._rows)))]
                try:
                    db.write_usage(self.engine, rows)
                except Exception:
                    self._rows.extendleft(reversed(rows))  # back in front, in order
                    raise
                self.written += len(rows)

    def close(self) -> None:
        """Stop the thread and write every buffered row (the server calls this after its drain)."""
        self._stop = True
        self._wake.set()
        self._thread.join(30)
        self.flush()
