"""Tenant keys, their limits and the usage log of one server (`swiftkit serve --database URL`).

A request's key is looked up by its hash (cached for `KEY_CACHE_S`, so a revocation takes effect within
that), then admitted against the key's limits before the handler runs, so a refused request never takes an
engine slot: requests per minute and tokens per minute over a sliding 60 s window, and a token quota per
UTC day or month. Token counts are those of finished requests (requests in flight can overshoot a limit by
their own size, as with OpenAI's, which estimates). Counters live in this process: several servers on one
database each enforce the limits on their own share of the traffic.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import dataclass, field

from swiftkit.serve import db
from swiftkit.serve.errors import AuthError, BadRequest
from swiftkit.serve.usage import RequestRecord, UsageLog

KEY_CACHE_S = db.KEY_CACHE_S
WINDOW_S = 60.0


class Forbidden(BadRequest):
    status = 403
    type = "permission_error"


class RateLimited(BadRequest):
    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: float, code: str = "rate_limit_exceeded", type_: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after
        if type_:
            self.type = type_


@dataclass
class Identity:
    """Who is calling: a tenant key, the shared --api-key (tenant None), or the admin key."""

    key: db.Key | None = None
    admin: bool = False

    @property
    def tenant(self) -> str | None:
        return self.key.tenant if self.key else None

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else ("admin" if self.admin else None)


@dataclass
class _Counters:
    requests: collections.deque = field(default_factory=collections.deque)  # admission times
    tokens: collections.deque = field(default_factory=collections.deque)  # (finish time, tokens)
    token_sum: int = 0
    period_start: object = None
    period_used: int = 0

    def trim(self, at: float) -> None:
        while self.requests and self.requests[0] <= at - WINDOW_S:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= at - WINDOW_S:
            self.token_sum -= self.tokens.popleft()[1]


def reset_text(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: `20ms`, `1s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


class Tenancy:
    def __init__(self, engine, metrics, capacity: int):
        self.engine, self.metrics = engine, metrics
        self._keys: dict[bytes, tuple[db.Key | None, float]] = {}
        self._counters: dict[str, _Counters] = collections.defaultdict(_Counters)
        self.log = UsageLog(engine, capacity, on_drop=metrics.usage_dropped.inc)

    async def lookup(self, secret: bytes) -> db.Key:
        cached = self._keys.get(secret)
        if cached is None or time.monotonic() - cached[1] > KEY_CACHE_S:
            key = await asyncio.to_thread(db.find_key, self.engine, secret)
            self._keys[secret] = cached = (key, time.monotonic())
            if len(self._keys) > 10000:  # made-up keys must not grow the cache without bound
                self._keys = {secret: cached}
        key = cached[0]
        if key is None:
            raise AuthError("invalid API key", code="invalid_api_key")
        state = key.state()
        if state != "active":
            raise AuthError(f"this API key was {state} ({key.id})", code=f"{state}_api_key")
        return key

    async def admit(self, key: db.Key, model: str | None) -> list[tuple[bytes, bytes]]:
        """Check the key's model list and limits; count the request. The x-ratelimit-* headers to send."""
        if key.models is not None and model is not None and model not in key.models:
            raise Forbidden(f"this key may not use the model `{model}`; allowed: {', '.join(key.models)}",
                            param="model", code="model_not_allowed")
        c = self._counters[key.id]
        at = time.monotonic()
        c.trim(at)
        if key.quota_tokens is not None:
            await self._refresh_period(key, c)
            if c.period_used >= key.quota_tokens:
                end = db.period_end(key.quota_period)
                self.metrics.rate_limited.labels("quota").inc()
                raise RateLimited(f"tenant {key.tenant} used its quota of {key.quota_tokens} tokens per "
                                  f"{key.quota_period} ({c.period_used} used); it renews at {end:%Y-%m-%d %H:%M} UTC",
                                  retry_after=(end - db.now()).total_seconds(),
                                  code="insufficient_quota", type_="insufficient_quota")
        if key.rpm is not None and len(c.requests) >= key.rpm:
            self.metrics.rate_limited.labels("requests").inc()
            raise RateLimited(f"rate limit of {key.rpm} requests per minute reached for key {key.id}",
                              retry_after=c.requests[0] + WINDOW_S - at)
        if key.tpm is not None and c.token_sum >= key.tpm:
            self.metrics.rate_limited.labels("tokens").inc()
            raise RateLimited(f"rate limit of {key.tpm} tokens per minute reached for key {key.id} "
                              f"({c.token_sum} used)", retry_after=self._tokens_free_in(c, key.tpm, at))
        c.requests.append(at)
        return self.headers(key, at)

    async def _refresh_period(self, key: db.Key, c: _Counters) -> None:
        start = db.period_start(key.quota_period)
        if c.period_start != start:  # first sight of the key, or a new day/month
            c.period_used = await asyncio.to_thread(db.tokens_used, self.engine, key.id, start)
            c.period_start = start

    @staticmethod
    def _tokens_free_in(c: _Counters, tpm: int, at: float) -> float:
        """Seconds until enough tokens leave the window to get back under the limit."""
        over = c.token_sum - tpm
        for t, n in c.tokens:
            over -= n
            if over < 0:
                return t + WINDOW_S - at
        return WINDOW_S

    def headers(self, key: db.Key, at: float | None = None) -> list[tuple[bytes, bytes]]:
        at = time.monotonic() if at is None else at
        c = self._counters[key.id]
        out = []
        if key.rpm is not None:
            reset = (c.requests[0] + WINDOW_S - at) if c.requests else 0.0
            out += [(b"x-ratelimit-limit-requests", str(key.rpm).encode()),
                    (b"x-ratelimit-remaining-requests", str(max(0, key.rpm - len(c.requests))).encode()),
                    (b"x-ratelimit-reset-requests", reset_text(reset).encode())]
        if key.tpm is not None:
            reset = (c.tokens[0][0] + WINDOW_S - at) if c.tokens else 0.0
            out += [(b"x-ratelimit-limit-tokens", str(key.tpm).encode()),
                    (b"x-ratelimit-remaining-tokens", str(max(0, key.tpm - c.token_sum)).encode()),
                    (b"x-ratelimit-reset-tokens", reset_text(reset).encode())]
        return out

    def finish(self, who: Identity, record: RequestRecord) -> None:
        """Count a finished request's tokens against its key and queue its usage row."""
        tokens = record.prompt_tokens + record.completion_tokens
        if who.key is not None and tokens:
            c = self._counters[who.key.id]
            c.tokens.append((time.monotonic(), tokens))
            c.token_sum += tokens
            c.period_used += tokens
        self.log.add(record.row(time.perf_counter() - record.started))
        self.metrics.usage_pending.set(self.log.pending())

    def close(self) -> None:
        self.log.close()
