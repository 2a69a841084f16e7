"""The engine loop: a background thread that admits, prefills, decodes and emits, step by step.

Callers (HTTP handlers, `swiftkit infer`) only ever `submit` a request with a sink and `abort` it;
everything touching the model, the cache and request state happens on the engine thread, so there
are no locks on the hot path except the hand-over queue of new requests and aborts.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from swiftkit.console import console
from swiftkit.serve.engine.detokenizer import Detokenizer, hidden_token_ids
from swiftkit.serve.engine.request import Request, RequestOutput, SamplingParams, Status
from swiftkit.serve.engine.runner import make_runner
from swiftkit.serve.engine.sampler import Sampler, prompt_logprobs
from swiftkit.serve.engine.scheduler import QueueFull, Scheduler
from swiftkit.serve.engine.spec import SpecGate, accept_greedy, ngram_draft

EngineBusy = QueueFull


@dataclass
class EngineOptions:
    max_num_seqs: int = 32
    max_model_len: int = 2048
    max_queue: int = 256
    max_batched_tokens: int = 8192
    seed: int = 0
    engine: str = "auto"  # auto | fast | plain (runner.make_runner)
    enforce_eager: bool = False
    kv_cache: str = "auto"  # auto | paged | slots: the fast runner's cache (auto: paged on CPU, slots on CUDA)
    kv_cache_memory: float | None = None  # GiB for the paged pool (None: runner.pool_blocks decides)
    block_size: int = 16
    # Off unless asked (serve asks): a cache outlives a drain(), so a caller that changes the weights between
    # calls (rollouts during training) would otherwise read keys of the old weights; see weights_changed.
    prefix_caching: bool = False
    speculative_tokens: int = 0  # paged KV, greedy rows: prompt-lookup draft tokens verified per step (0: off)
    # Paged KV: prompt tokens computed per step at most, so a long prompt enters in chunks between the running
    # rows' decode steps instead of stalling them for its whole prefill (0: whole prompts).
    max_prefill_chunk: int = 0


class Engine:
    def __init__(self, model, tokenizer, eos_ids: Sequence[int], options: EngineOptions,
                 multi_adapter: bool = False, on_step: Callable[[int, int], None] | None = None):
        self.tokenizer = tokenizer
        self.options = options
        self.eos_ids = frozenset(eos_ids)
        self.runner = make_runner(model, options.max_num_seqs, options.max_model_len, options.engine, multi_adapter,
                                  options.enforce_eager, options.kv_cache, options.kv_cache_memory, options.block_size,
                                  options.prefix_caching)
        self.paged = hasattr(self.runner, "allocate")
        self.preemptions = 0
        self.spec_drafted = self.spec_accepted = 0
        self.spec_gate = SpecGate()
        self.device = self.runner.device
        self.sampler = Sampler(sorted(self.eos_ids), options.seed, self.device)
        self.scheduler = Scheduler(options.max_num_seqs, options.max_queue, options.max_batched_tokens)
        self.on_step = on_step
        self._backend = tokenizer.backend_tokenizer
        self._hidden = hidden_token_ids(tokenizer)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._calls: collections.deque = collections.deque()  # (fn, future, when) waiting for their turn
        self._calls_after = 0.0  # while sequences run, no call before this time (_run_call)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._pending: list[tuple[Request, RequestOutput]] = []
        self.steps = 0

    # -- public, thread-safe ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="swiftkit-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)

    def submit(self, req: Request) -> None:
        """Queue a request; raises QueueFull when the waiting queue is at its bound, ValueError for
        parameters the sampler cannot represent (they would fail the whole batch's step)."""
        free = self.options.max_num_seqs - len(self.scheduler.running) - len(self.scheduler.prefilling)
        if self.queue_depth() >= self.options.max_queue + max(free, 0):
            raise QueueFull(f"the request queue is full ({self.options.max_queue} waiting)")
        check_params(req.params)
        if req.params.seed is not None:
            req.generator = torch.Generator(self.device).manual_seed(req.params.seed)
        req.detokenizer = Detokenizer(self._backend, self._hidden, req.params.stop, req.params.skip_special_tokens)
        self._inbox.put(("add", req))
        self._wake.set()

    def call(self, fn: Callable[[], object], when: Callable[[], bool] | None = None) -> concurrent.futures.Future:
        """Run `fn` on the engine thread between steps (other model uses, e.g. embeddings, never race a step);
        with `when`, not before that holds (checked on the engine thread; later calls do not wait for it)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._inbox.put(("call", (fn, future, when)))
        self._wake.set()
        return future

    def adapter_call(self, op: str, name: str, path: str | None = None) -> concurrent.futures.Future:
        """Load (`op` "load", from `path`) or unload a LoRA at run time. An unload waits until no queued or
        running request uses the adapter: in-flight requests finish on it first."""
        if op == "load":
            return self.call(lambda: self.runner.load_adapter(name, path))
        sched = self.scheduler
        return self.call(lambda: self.runner.unload_adapter(name),
                         when=lambda: not any(r.adapter == name for r in (*sched.running, *sched.prefilling, *sched.waiting)))

    def abort(self, req: Request) -> None:
        self._inbox.put(("abort", req))
        self._wake.set()

    def weights_changed(self) -> None:
        """The model's weights were updated in place (training between rollouts): cached prefixes hold keys
        of the old weights and must not be reused. Call between steps only (no request running)."""
        if self.paged:
            self.runner.blocks.reset_prefix_cache()

    def queue_depth(self) -> int:
        return len(self.scheduler.waiting) + self._inbox.qsize()

    def alive(self) -> bool:
        """The engine thread is running (or was never started: `drain()` steps on the caller's thread)."""
        return self._thread is None or self._thread.is_alive() or self._stopping

    def num_running(self) -> int:
        return len(self.scheduler.running)

    def idle(self) -> bool:
        return not self.scheduler.has_work and self._inbox.empty() and not self._calls

    def drain(self, on_step: Callable[[], None] | None = None) -> None:
        """Step on the calling thread until every submitted request has finished (benchmarks, tests: no thread)."""
        with torch.inference_mode():
            while True:
                self._drain_inbox()
                if not self.scheduler.has_work:
                    if self._calls:
                        continue
                    self._flush()
                    return
                self.step()
                if on_step:
                    on_step()

    def deliver(self, batch: list[tuple[Request, RequestOutput]]) -> None:
        """Hand a step's outputs to their sinks (overridden by AsyncEngine to cross into asyncio)."""
        for req, out in batch:
            req.sink(out)

    # -- engine thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        # The cache is written in place across steps: all of it lives in inference mode, on this thread.
        with torch.inference_mode():
            self._run()

    def _run(self) -> None:
        while not self._stopping:
            self._drain_inbox()
            self._flush()  # aborts emit their final output at once, even when no step follows
            if not self.scheduler.has_work:
                if self._calls:
                    continue
                if self.on_step:  # report the now-empty batch (aborts may have emptied it between steps)
                    self.on_step(0, 0)
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self.step()
            except Exception as exc:  # a model/runtime failure must end the requests, not the server
                console.print(f"[red]engine step failed:[/] {type(exc).__name__}: {exc}")
                failed = [*self.scheduler.running, *self.scheduler.prefilling]
                self.scheduler.running, self.scheduler.prefilling = [], []
                for req in failed:
                    req.status = Status.FINISHED
                    if self.paged:
                        self.runner.free(req)
                    self._emit(req, RequestOutput(req.request_id, [], "", finished=True, finish_reason="error",
                                                  prompt_tokens=len(req.prompt_ids), completion_tokens=len(req.output_ids)))
                if self.paged:  # blocks registered for this step's prefills may never have been written
                    self.runner.blocks.reset_prefix_cache()
                self._flush()
        for req in [*self.scheduler.running, *self.scheduler.prefilling, *self.scheduler.waiting]:
            if req.status is Status.RUNNING:
                self._finish(req, "abort")
            else:
                self._emit(req, RequestOutput(req.request_id, [], "", finished=True, finish_reason="abort",
                                              prompt_tokens=len(req.prompt_ids)))
        self._flush()

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, req = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                if req.adapter is not None and req.adapter not in self.runner.adapters:
                    # Unloaded between the server's check and here: end it alone (PEFT would fail the whole batch).
                    req.status = Status.FINISHED
                    self._emit(req, RequestOutput(req.request_id, [], "", finished=True, finish_reason="error",
                                                  stop_reason=f"the adapter {req.adapter} is not loaded",
                                                  prompt_tokens=len(req.prompt_ids)))
                    continue
                self.scheduler.waiting.append(req)
            elif kind == "call":
                self._calls.append(req)
            elif req.status is Status.RUNNING:
                self._finish(req, "abort")
            elif self.scheduler.remove_waiting(req):
                req.status = Status.FINISHED  # a preempted request has output: its held-back text goes out
                self._emit(req, RequestOutput(req.request_id, [], req.detokenizer.delta(final=True) if req.output_ids else "",
                                              finished=True, finish_reason="abort", prompt_tokens=len(req.prompt_ids),
                                              completion_tokens=len(req.output_ids)))
        self._run_call()

    def _run_call(self) -> None:
        """Other model uses (embedding chunks) share the engine thread with decoding: while sequences run,
        a call starts only once decoding has had as long as the previous call took, so a big embedding
        request halves the streams' speed at worst instead of stopping them."""
        if not self._calls or (self.scheduler.has_work and time.monotonic() < self._calls_after):
            return
        ready = next((c for c in self._calls if c[2] is None or c[2]()), None)
        if ready is None:
            return
        self._calls.remove(ready)
        fn, future, _ = ready
        started = time.monotonic()
        try:
            future.set_result(fn())
        except Exception as exc:
            future.set_exception(exc)
        ended = time.monotonic()
        self._calls_after = ended + (ended - started)

    def step(self) -> None:
        if self.paged:
            work = self.scheduler.schedule_prefill(self.runner.allocate, self.options.max_prefill_chunk)
            if work:
                self._prefill_chunks(work)
            self._make_room()
        elif admitted := self.scheduler.admit():
            self._prefill(admitted)
        batch = len(self.scheduler.running)
        speculated = batch and self.options.speculative_tokens and self.paged and self._speculate()
        if batch and not speculated:
            started = time.perf_counter()
            logits = self.runner.decode(self.scheduler.running)
            tokens, logprobs = self.sampler(logits, self.scheduler.running)  # on the host: the device is done
            if self.options.speculative_tokens:
                self.spec_gate.decoded(time.perf_counter() - started)
            for req, tok, lp in zip([*self.scheduler.running], tokens, logprobs, strict=True):
                self._append(req, tok, lp)
        self.steps += 1
        if self.on_step:
            self.on_step(batch, len(self.scheduler.waiting))
        self._flush()

    def _speculate(self) -> bool:
        """One speculative step for the whole batch (prompt lookup, spec.py) when every row decodes greedily
        with nothing editing its logits (so the model's argmax is the token either way) and at least one row
        found a draft; False: the caller takes a normal decode step."""
        running = [*self.scheduler.running]
        if not all(r.params.greedy and r.params.logprobs is None and not Sampler._needs_edit(r) for r in running):
            return False
        drafts = []
        for r in running:
            room = min(self.options.speculative_tokens, r.params.max_tokens - len(r.output_ids) - 1,
                       self.options.max_model_len - r.num_tokens - 1)
            drafts.append(ngram_draft(r.token_ids, room))
        if not any(drafts) or not self.spec_gate.wants(running, drafts):
            return False
        started = time.perf_counter()
        logits = self.runner.verify(running, drafts)
        if logits is None:
            return False
        greedy = logits.argmax(-1).tolist()
        emits = [accept_greedy(draft, row) for draft, row in zip(drafts, greedy, strict=True)]
        self.spec_gate.verified(time.perf_counter() - started, running, drafts, [len(e) - 1 for e in emits])
        for r, draft, emitted in zip(running, drafts, emits, strict=True):
            r.kv_end += len(emitted)  # the last token and the accepted draft tokens are in the cache now
            self.spec_drafted += len(draft)
            self.spec_accepted += len(emitted) - 1
            for tok in emitted:
                self._append(r, tok, None)
                if r.status is not Status.RUNNING or r.slot < 0:
                    break
            else:
                self.runner.register(r)
        return True

    def _make_room(self) -> None:
        """Paged cache: when the next decode step needs more new blocks than are free, the newest running
        sequences give theirs back and wait at the head of the queue; they re-enter by recomputing prompt
        + output (their registered blocks are often still in the prefix cache), so nothing fails."""
        running = self.scheduler.running
        while running and self.runner.blocks_needed(running) > self.runner.blocks.num_free:
            victim = (self.scheduler.prefilling or running)[-1]  # a half-prefilled prompt first: it has no output yet
            self._release(victim)
            victim.status = Status.WAITING
            victim.preemptions += 1
            self.preemptions += 1
            self.scheduler.waiting.appendleft(victim)

    def _release(self, req: Request) -> None:
        self.scheduler.release(req, self.runner.move)
        if self.paged:
            self.runner.free(req)

    def _prefill(self, admitted: list[Request]) -> None:
        """Slot runners: the admitted prompts whole, in one forward (they start at position 0 of a fresh row)."""
        row0 = len(self.scheduler.running)
        want_prompt_lp = any(self._wants_prompt_logprobs(r) for r in admitted)
        last, logits = self.runner.prefill(admitted, row0, all_logits=want_prompt_lp)
        for b, r in enumerate(admitted):
            r.status = Status.RUNNING
            self.scheduler.running.append(r)
            if self._wants_prompt_logprobs(r):
                self._prompt_logprobs(r, logits[b, r.kv_start:], 0)
        self._first_tokens(admitted, last)

    def _prefill_chunks(self, work: list[tuple[Request, int]]) -> None:
        """Paged KV: one forward computes this step's positions of every admitted prompt (all of it, or its
        next chunk); a request whose prompt is now complete samples its first token and joins the decode
        batch, the others keep their blocks and continue next step (only a last chunk samples)."""
        starts = [r.kv_end for r, _ in work]
        want = [self._wants_prompt_logprobs(r) for r, _ in work]
        # the first row of each chunk whose logits prompt logprobs need (n: none)
        froms = [self._scored_from(r, start, n) if w else n for (r, n), start, w in zip(work, starts, want, strict=True)]
        last, logits = self.runner.prefill(work, froms if any(want) else None)
        done = []
        for b, ((req, _), start) in enumerate(zip(work, starts, strict=True)):
            req.status = Status.RUNNING
            if want[b]:
                self._prompt_logprobs(req, logits[b], start, froms[b])
            if req.kv_end == req.num_tokens:
                self.scheduler.start_decoding(req)
                done.append(b)
        if done:
            self._first_tokens([work[b][0] for b in done], last[done])

    @staticmethod
    def _wants_prompt_logprobs(req: Request) -> bool:
        # A preempted request re-entering with output already sent them with its first token.
        return req.params.prompt_logprobs is not None and not req.output_ids

    @staticmethod
    def _scored_from(req: Request, start: int, n: int) -> int:
        """Of a chunk's n positions from `start`, the first whose logits its prompt logprobs need: the rows before
        params.prompt_logprobs_from - 1 are not scored (a fresh few-shot context is most of them)."""
        return max(0, min(n, req.params.prompt_logprobs_from - 1 - start))

    def _prompt_logprobs(self, req: Request, logits: torch.Tensor, start: int, skip: int = 0) -> None:
        """Prompt logprobs from the logits of positions [start + skip, start + skip + len(logits)) (a chunk of the
        prompt, or all of it; the `skip` rows before are not scored); a chunk's part extends what the earlier
        chunks gave. The first chunk starts after the prefix-cache hit (kv_cached, 0 unless
        params.prompt_logprobs_from allowed one): positions up to it get None."""
        if req.error is not None:
            return
        try:
            end = start + skip + len(logits)
            part = [None] * skip + prompt_logprobs(logits, req.prompt_ids[start + skip:end + 1], req.params.prompt_logprobs)
        except Exception as exc:
            req.error = f"{type(exc).__name__}: {exc}"
            return
        req.prompt_lp = [None] * start + part if start == req.kv_cached else req.prompt_lp + part[1:]

    def _first_tokens(self, requests: list[Request], last: torch.Tensor) -> None:
        tokens, logprobs = self.sampler(last, requests)
        for req, tok, lp in zip(requests, tokens, logprobs, strict=True):
            plp = req.prompt_lp if self._wants_prompt_logprobs(req) and req.error is None else None
            self._append(req, tok, lp, plp)

    def _append(self, req: Request, tok: int, lp, plp=None) -> None:
        """Record a sampled token, decide whether the request is finished, and emit its delta.

        A failure here (detokenizer, grammar) or in the sampler's per-row work (req.error) belongs to
        this request alone: it finishes with "error" and the rest of the batch goes on."""
        if req.first_token_at is None:
            req.first_token_at = time.monotonic()
        req.output_ids.append(tok)
        if req.error is None:
            try:
                self._advance(req, tok, lp, plp)
                return
            except Exception as exc:
                req.error = f"{type(exc).__name__}: {exc}"
        console.print(f"[red]request {req.request_id} failed:[/] {req.error}")
        req.finish_reason = "error"
        if req.slot >= 0:
            self._release(req)
        req.status = Status.FINISHED
        self._emit(req, RequestOutput(req.request_id, [], "", finished=True, finish_reason="error",
                                      prompt_tokens=len(req.prompt_ids), completion_tokens=len(req.output_ids)))

    def _advance(self, req: Request, tok: int, lp, plp) -> None:
        p = req.params
        reason, stop_reason = None, None
        if tok in self.eos_ids and not p.ignore_eos:
            reason = "stop"
        elif tok in p.stop_token_ids:
            reason, stop_reason = "stop", tok
        else:
            req.detokenizer.add(tok)
            if req.matcher is not None:
                req.matcher.consume_token(tok)
            if req.detokenizer.stopped_by is not None:
                reason, stop_reason = "stop", req.detokenizer.stopped_by
            elif req.matcher is not None and req.matcher.is_stopped():
                reason = "stop"
        if reason is None and (len(req.output_ids) >= p.max_tokens or req.num_tokens >= self.options.max_model_len):
            reason = "length"
        out = RequestOutput(
            req.request_id, [tok], req.detokenizer.delta(final=reason is not None),
            logprobs=[lp] if lp is not None else None, prompt_logprobs=plp,
            finished=reason is not None, finish_reason=reason, stop_reason=stop_reason,
            prompt_tokens=len(req.prompt_ids), completion_tokens=len(req.output_ids),
        )
        self._emit(req, out)
        if reason is not None:
            req.finish_reason, req.stop_reason = reason, stop_reason
            self._release(req)

    def _finish(self, req: Request, reason: str) -> None:
        req.finish_reason = reason
        self._release(req)
        self._emit(req, RequestOutput(req.request_id, [], req.detokenizer.delta(final=True), finished=True,
                                      finish_reason=reason, prompt_tokens=len(req.prompt_ids),
                                      completion_tokens=len(req.output_ids)))

    def _emit(self, req: Request, out: RequestOutput) -> None:
        self._pending.append((req, out))

    def _flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.deliver(batch)


def check_params(p: SamplingParams) -> None:
    """Values the batched sampler turns into tensors must fit them (the server's protocol bounds them
    already; this keeps any other caller from failing a step for everyone)."""
    ints = {"max_tokens": p.max_tokens, "top_k": p.top_k, "min_tokens": p.min_tokens}
    for name, value in ints.items():
        if not -(2**31) <= value < 2**31:
            raise ValueError(f"{name} out of range: {value}")
    if p.seed is not None and not -(2**63) <= p.seed < 2**64:
        raise ValueError(f"seed out of range: {p.seed}")
    floats = {"temperature": p.temperature, "top_p": p.top_p, "min_p": p.min_p, "presence_penalty": p.presence_penalty,
              "frequency_penalty": p.frequency_penalty, "repetition_penalty": p.repetition_penalty,
              **{f"logit_bias[{k}]": v for k, v in p.logit_bias.items()}}
    for name, value in floats.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite")


class RequestStream:
    """Async iterator over one request's outputs; `close()` before the end aborts it (slot freed)."""

    def __init__(self, engine: Engine, req: Request, outputs: asyncio.Queue):
        self.engine, self.request, self._outputs = engine, req, outputs
        self.done = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.done:
            raise StopAsyncIteration
        out = await self._outputs.get()
        if isinstance(out, Exception):  # the engine cannot finish this request (e.g. its process died)
            self.done = True
            raise out
        self.done = out.finished
        return out

    def pending(self) -> bool:
        return not self._outputs.empty()

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.engine.abort(self.request)


class AsyncEngine(Engine):
    """The engine as asyncio code sees it: `open()` submits and returns the request's output stream."""

    Busy = QueueFull

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.embedder = None
        self._outbox: list[tuple[Request, RequestOutput]] = []
        self._outbox_lock = threading.Lock()
        self._wakeup_pending = False

    def deliver(self, batch: list[tuple[Request, RequestOutput]]) -> None:
        # Waking the event loop is a syscall plus a GIL hand-over; do it only when the loop has taken
        # everything delivered before (while it is still busy, new outputs just join the outbox).
        with self._outbox_lock:
            self._outbox += batch
            wake, self._wakeup_pending = not self._wakeup_pending, True
        if wake and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._dispatch)

    def _dispatch(self) -> None:
        with self._outbox_lock:
            batch, self._outbox, self._wakeup_pending = self._outbox, [], False
        for req, out in batch:
            req.sink(out)

    async def embed(self, batches: list[list[int]]) -> list[list[float]]:
        """Embeddings from `self.embedder` (set by the server), computed on the engine thread."""
        return await asyncio.wrap_future(self.call(lambda: self.embedder(batches)))

    async def change_adapter(self, op: str, name: str, path: str | None = None) -> None:
        await asyncio.wrap_future(self.adapter_call(op, name, path))

    def open(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
             matcher=None) -> RequestStream:
        self.loop = self.loop or asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()
        req = Request(list(prompt_ids), params, sink=outputs.put_nowait, adapter=adapter, matcher=matcher)
        self.submit(req)
        return RequestStream(self, req, outputs)
