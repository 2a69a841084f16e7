"""Who runs: a bounded FIFO of waiting requests and a compact list of running ones.

Between decode steps, waiting requests are admitted while slots are free (and their prefill fits the token
budget: the padded batch on a slot cache, the positions left after prefix-cache hits on a paged one, whose
blocks must also be free); finished or aborted requests
leave at once, and the last running row is moved into the hole so running rows stay 0..B-1 (see
kv_cache.py; a paged cache's block tables travel with their requests, so its move is a no-op).

Chunked prefill (paged cache, `chunk` > 0): each step computes at most `chunk` prompt tokens in all. A prompt
longer than what is left of that budget enters over several steps: admitted, it holds its blocks in
`prefilling` (not a row of the decode batch) while each step computes its next positions, and joins `running`
when its last chunk samples its first token. The running rows decode every step meanwhile.
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
        self.prefilling: list[Request] = []  # admitted (blocks held), prompt partly computed; oldest first

    def add(self, req: Request) -> None:
        if len(self.waiting) >= self.max_queue:
            raise QueueFull(f"the request queue is full ({self.max_queue} waiting)")
        self.waiting.append(req)

    def admit(self) -> list[Request]:
        """Waiting requests that join the batch now (FIFO; the first always fits the token budget)."""
        admitted: list[Request] = []
        while self.waiting and self._fits(self.waiting[0], admitted):
            admitted.append(self.waiting.popleft())
        return admitted

    def schedule_prefill(self, allocate: Callable[[Request, int, int | None, int | None], bool],
                         chunk: int) -> list[tuple[Request, int]]:
        """Paged cache: this step's prefill work, (request, positions it computes now from its kv_end).

        Requests still prefilling go first (oldest first), then waiting ones are admitted (FIFO) while the step's
        `chunk` budget of computed tokens lasts (0: whole prompts, while the positions they compute, cached ones
        not counted, stay within max_batched_tokens; the first always fits). `allocate(req, rows already
        admitted, chunk budget left, whole-prompt limit)` takes the request's blocks and says False when they are
        not free or its prompt exceeds the limit: admission stops there (the queue stays FIFO)."""
        budget = chunk or None
        room = None if chunk else self.max_batched_tokens  # a flat batch: no padding, and prefix hits cost nothing
        work: list[tuple[Request, int]] = []

        def take(req: Request) -> None:
            nonlocal budget
            n = req.num_tokens - req.kv_end
            if budget is not None:
                n = min(n, budget)
                budget -= n
            work.append((req, n))

        for req in self.prefilling:
            if budget == 0:
                break
            take(req)
        admitted: list[Request] = []
        while self.waiting and self._has_row(admitted) and (budget is None or budget > 0):
            if not allocate(self.waiting[0], len(self.running) + len(self.prefilling) + len(admitted), budget,
                            room if work else None):
                break
            admitted.append(self.waiting.popleft())
            take(admitted[-1])
            if room is not None:
                room -= work[-1][1]
        self.prefilling += admitted
        return work

    def _has_row(self, admitted: list[Request]) -> bool:
        return len(self.running) + len(self.prefilling) + len(admitted) < self.max_num_seqs

    def _fits(self, nxt: Request, admitted: list[Request]) -> bool:
        """Slot runners: a free row, and a padded prefill batch of at most max_batched_tokens, which the first
        request always fits."""
        if not self._has_row(admitted):
            return False
        width = max([nxt.num_tokens, *(r.num_tokens for r in admitted)])  # a preempted request re-enters with its output so far
        return not admitted or width * (len(admitted) + 1) <= self.max_batched_tokens

    def start_decoding(self, req: Request) -> None:
        """A request whose prefill is complete becomes the last row of the decode batch."""
        self._drop_prefilling(req)
        req.slot = len(self.running)
        self.running.append(req)

    def _drop_prefilling(self, req: Request) -> None:
        self.prefilling = [r for r in self.prefilling if r is not req]  # by identity: dataclass == compares fields

    def remove_waiting(self, req: Request) -> bool:
        try:
            self.waiting.remove(req)
        except ValueError:
            return False
        return True

    def release(self, req: Request, move) -> None:
        """Take a running request out; `move(src, dst, length)` relocates the last row into its slot."""
        if req.slot < 0:  # admitted but still prefilling: not a row of the decode batch yet
            self._drop_prefilling(req)
            req.status = Status.FINISHED
            return
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
        return bool(self.waiting or self.running or self.prefilling)
