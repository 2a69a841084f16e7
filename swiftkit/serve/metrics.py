"""Prometheus metrics: requests, latencies, tokens, queue depth and the engine's batch size."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class Metrics:
    """One registry per server, so several servers in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("swiftkit_requests", "HTTP requests finished", ["endpoint", "status"], registry=r)
        self.latency = Histogram("swiftkit_request_latency_seconds", "End-to-end request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("swiftkit_time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("swiftkit_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter("swiftkit_generation_tokens", "Tokens generated", registry=r)
        self.queue_depth = Gauge("swiftkit_queue_depth", "Requests waiting for a slot", registry=r)
        self.running = Gauge("swiftkit_running_requests", "Requests in the running batch", registry=r)
        self.batch_size = Histogram("swiftkit_batch_size", "Sequences per decode step", buckets=BATCH_BUCKETS, registry=r)
        self.max_batch_size = Gauge("swiftkit_batch_size_max", "Largest decode batch seen", registry=r)
        self._max_batch = 0
        self.usage_dropped = Counter("swiftkit_usage_dropped", "Usage rows dropped: the buffer was full (--audit-buffer)",
                                     registry=r)
        self.usage_pending = Gauge("swiftkit_usage_pending", "Usage rows waiting to be written", registry=r)
        self.rate_limited = Counter("swiftkit_rate_limited", "Requests refused by a key's limit", ["limit"], registry=r)

    def on_step(self, batch: int, waiting: int) -> None:
        """Called by the engine thread after every step (prometheus_client is thread-safe)."""
        self.queue_depth.set(waiting)
        self.running.set(batch)
        if batch:
            self.batch_size.observe(batch)
            if batch > self._max_batch:
                self._max_batch = batch
                self.max_batch_size.set(batch)

    def render(self) -> bytes:
        return generate_latest(self.registry)
