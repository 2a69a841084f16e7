"""Who runs: a bounded FIFO of waiting requests and a compact list of running ones.

Between decode steps, waiting requests are admitted while slots are free (and their padded prefill
fits the token budget, and with a paged cache their blocks are free); finished or aborted requests
leave at once, and the last running row is moved into the hole so running rows stay 0..B-1 (see
kv_cache.py; a paged cache's block tables travel with their requests, so its move is a no-op).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from swiftkit.serve.engine.request import Request, Status


class QueueFull(Exception):
    """The waiting queue is at its bound; the server answers 429."""


class Scheduler:
    def __init__(self, max_num_seqs: int, max_queue: int, max_batched_tokens: int):
        self.max_num_seqs = max_num_seqs
        self.max_queue = max_queue
        self.max_batched_tokens = max_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def add(self, req: Request) -> None:
        if len(self.waiting) >= self.max_queue:
            raise QueueFull(f"the request queue is full ({self.max_queue} waiting)")
        self.waiting.append(req)

    def admit(self, allocate: Callable[[Request, int], bool] | None = None) -> list[Request]:
        """Waiting requests that join the batch now (FIFO; the first always fits the token budget).

        With a paged cache, `allocate(req, rows already running or admitted)` takes the request's blocks
        and says False when they are not free: admission stops there (the queue stays FIFO)."""
        admitted: list[Request] = []
        width = 0
        while self.waiting and len(self.running) + len(admitted) < self.max_num_seqs:
            nxt = self.waiting[0]
            new_width = max(width, nxt.num_tokens)  # a preempted request re-enters with its output so far
            if admitted and new_width * (len(admitted) + 1) > self.max_batched_tokens:
                break
            if allocate is not None and not allocate(nxt, len(self.running) + len(admitted)):
                break
            width = new_width
            admitted.append(self.waiting.popleft())
        return admitted

    def remove_waiting(self, req: Request) -> bool:
        try:
            self.waiting.remove(req)
        except ValueError:
            return False
        return True

    def release(self, req: Request, move) -> None:
        """Take a running request out; `move(src, dst, length)` relocates the last row into its slot."""
        index = req.slot
        last = self.running[-1]
        if last is not req:
            move(last.slot, index, last.kv_end)
            last.slot = index
            self.running[index] = last
        self.running.pop()
        req.slot = -1
        req.status = Status.FINISHED

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)
