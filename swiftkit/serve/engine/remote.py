"""The engine in its own process, behind the same `open()` / `abort()` / `embed()` the server uses.

Why: the engine thread and the HTTP event loop are both Python-heavy, and in one process they share
one GIL (measured: the engine held it ~80 % of the time, starving SSE delivery; docs/benchmarks.md).
In two processes each has its own interpreter. They talk over two one-way pipes: requests and aborts
go down, each engine step's outputs come up as one message. The child owns the weights; the parent
keeps only the tokenizer.

Why the parent reads and writes its pipe ends on threads of their own, in blocking mode: a pipe the
event loop watches is non-blocking (uvloop makes it so), and a message larger than the pipe buffer
(a request with big stop strings or a big schema) then fails half-way with BlockingIOError and leaves
half a frame in the pipe, after which nothing the engine sends can be read. A blocking `send`
completes every frame whatever its size, and a thread never stalls the event loop while it waits.
The reader also sees the child's death at once (EOF) and fails every open request.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import queue
import threading
from collections.abc import Callable
from typing import Any

from swiftkit.errors import SwiftkitError
from swiftkit.serve.engine.engine import Engine, RequestStream
from swiftkit.serve.engine.request import Request, RequestOutput, SamplingParams
from swiftkit.serve.engine.scheduler import QueueFull
from swiftkit.serve.errors import Unavailable


def _child_main(cfg_json: str, inbox, outbox) -> None:
    """Engine process: load the model, run the engine thread, serve pipe messages on the main thread."""
    from swiftkit.serve.config import ServeConfig
    from swiftkit.serve.constrained import GrammarFactory
    from swiftkit.serve.embeddings import load_embedder
    from swiftkit.serve.model import load_served_model

    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock:
            outbox.send(msg)

    try:
        cfg = ServeConfig.model_validate_json(cfg_json)
        served = load_served_model(cfg)
        grammar = GrammarFactory(served.tokenizer, served.vocab_size, served.eos_ids)
        embedder = load_embedder(cfg.embedding_model, served)
    except Exception as exc:
        send(("failed", f"{type(exc).__name__}: {exc}", getattr(exc, "hint", None)))
        return
    stats = {"running": 0, "waiting": 0}
    requests: dict[str, Request] = {}

    class PipeEngine(Engine):
        def deliver(self, batch: list[tuple[Request, RequestOutput]]) -> None:
            for req, out in batch:
                if out.finished:
                    requests.pop(req.request_id, None)
            send(("out", [out for _, out in batch], stats["running"], stats["waiting"]))

    def on_step(running: int, waiting: int) -> None:
        if running == 0 and waiting == 0 and stats["running"] == 0 and stats["waiting"] == 0:
            return  # idle and already reported
        stats["running"], stats["waiting"] = running, waiting
        if running == 0 and waiting == 0:
            send(("stats", 0, 0))

    engine = served.build_engine(cfg, engine_cls=PipeEngine, on_step=on_step)
    engine.start()
    send(("ready", None))
    while True:
        try:
            msg = inbox.recv()
        except EOFError:  # the server process is gone
            break
        kind = msg[0]
        if kind == "add":
            _, rid, prompt_ids, params, adapter = msg
            req = Request(prompt_ids, params, sink=None, adapter=adapter, request_id=rid)
            try:
                if params.constraint:
                    req.matcher = grammar.matcher(params.constraint)
                requests[rid] = req
                engine.submit(req)
            except Exception as exc:  # validated by the server already; never leave a stream hanging
                requests.pop(rid, None)
                send(("out", [RequestOutput(rid, [], "", finished=True, finish_reason="error",
                                            stop_reason=str(exc))], stats["running"], stats["waiting"]))
        elif kind == "abort":
            req = requests.get(msg[1])
            if req is not None:
                engine.abort(req)
        elif kind in ("embed", "adapter"):
            call_id, args = msg[1], msg[2:]

            def done(future, call_id=call_id) -> None:
                error = future.exception()
                send(("result", call_id, None if error else future.result(), repr(error) if error else None))

            if kind == "embed":
                future = engine.call(lambda batches=args[0]: embedder(batches))
            else:
                future = engine.adapter_call(*args)
            future.add_done_callback(done)
        elif kind == "stop":
            break
    engine.stop()


class EngineProcess:
    """The server-side handle of an engine running in a child process."""

    Busy = QueueFull

    def __init__(self, cfg, max_num_seqs: int, max_queue: int, on_step=None):
        self.cfg = cfg
        self.capacity = max_num_seqs + max_queue
        self.on_step = on_step
        self.on_death: Callable[[], None] | None = None  # called on the event loop when the child dies
        # What open requests are told after the child's death: a deployment restarts its workers instead.
        self.after_death = "the server is shutting down"
        self.dead = False
        self._ids = itertools.count()
        self._sinks: dict[str, Any] = {}
        self._calls: dict[int, asyncio.Future] = {}
        self._running = self._waiting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down = self._up = None
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.proc = None

    def start(self, timeout: float = 600) -> None:
        ctx = mp.get_context("spawn")  # a clean interpreter: no inherited threads or torch state
        down_r, self._down = ctx.Pipe(duplex=False)
        self._up, up_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child_main, args=(self.cfg.model_dump_json(), down_r, up_w), daemon=True,
                                name="swiftkit-engine")
        self.proc.start()
        down_r.close()
        up_w.close()  # only the child holds the write end now, so its death is an EOF here
        if not self._up.poll(timeout):
            raise SwiftkitError("the engine process did not start in time")
        try:
            msg = self._up.recv()
        except EOFError:
            raise SwiftkitError("the engine process died while loading the model (see the log above)") from None
        if msg[0] == "failed":
            raise SwiftkitError(f"engine: {msg[1]}", msg[2])
        threading.Thread(target=self._write_loop, name="swiftkit-engine-writer", daemon=True).start()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading the engine's messages into `loop` (the server's, at startup)."""
        if self._loop is None:
            self._loop = loop
            threading.Thread(target=self._read_loop, name="swiftkit-engine-reader", daemon=True).start()

    def stop(self) -> None:
        if self.proc is None:
            return
        self._outbox.put(("stop",))
        self._outbox.put(None)
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.terminate()

    def alive(self) -> bool:
        return not self.dead and self.proc is not None and self.proc.is_alive()

    # -- the pipe threads ---------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while (msg := self._outbox.get()) is not None:
            try:
                self._down.send(msg)
            except (OSError, ValueError):  # the child is gone: the reader reports it
                return

    def _read_loop(self) -> None:
        while True:
            try:
                msg = self._up.recv()
            except (EOFError, OSError):
                break
            if not self._call_soon(self._handle, msg):
                return
        self._call_soon(self._died)

    def _call_soon(self, fn, *args) -> bool:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server is exiting
            return False
        return True

    def _died(self) -> None:
        if self.dead:
            return
        self.dead = True
        code = self.proc.exitcode if self.proc is not None else None
        error = Unavailable(f"the engine process died (exit code {code}); {self.after_death}", code="engine_dead")
        for sink in self._sinks.values():
            sink(error)
        self._sinks.clear()
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        self._calls.clear()
        self._report(0, 0)
        if self.on_death:
            self.on_death()

    # -- used by the HTTP handlers (event loop thread) -------------------------------------------
    def _check_alive(self) -> None:
        if self.dead:
            raise Unavailable("the engine process is not running; the server is shutting down", code="engine_dead")

    def open(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
             matcher=None) -> RequestStream:
        """Submit; the grammar matcher is rebuilt in the engine process from `params.constraint`."""
        self._check_alive()
        if len(self._sinks) >= self.capacity:
            raise QueueFull(f"the request queue is full ({self.capacity - self.cfg.max_num_seqs} waiting)")
        rid = f"req-{next(self._ids)}"
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()
        self._sinks[rid] = outputs.put_nowait
        self._outbox.put(("add", rid, list(prompt_ids), params, adapter))
        return RequestStream(self, rid, outputs)

    def abort(self, rid: str) -> None:
        if rid in self._sinks:
            self._outbox.put(("abort", rid))

    async def embed(self, batches: list[list[int]]) -> list[list[float]]:
        return await self._call("embed", batches)

    async def change_adapter(self, op: str, name: str, path: str | None = None) -> None:
        await self._call("adapter", op, name, path)

    async def _call(self, kind: str, *args):
        """A call on the engine thread of the child (Engine.call), answered by a "result" message."""
        self._check_alive()
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self._outbox.put((kind, call_id, *args))
        return await future

    def queue_depth(self) -> int:
        return max(self._waiting, len(self._sinks) - self.cfg.max_num_seqs, 0)

    def num_running(self) -> int:
        return self._running

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "out":
            _, outputs, running, waiting = msg
            for out in outputs:
                sink = self._sinks.get(out.request_id)
                if sink is not None:
                    sink(out)
                    if out.finished:
                        del self._sinks[out.request_id]
            self._report(running, waiting)
        elif kind == "stats":
            self._report(msg[1], msg[2])
        elif kind == "result":
            _, call_id, value, error = msg
            future = self._calls.pop(call_id, None)
            if future is not None and not future.done():
                if error:
                    future.set_exception(RuntimeError(error))
                else:
                    future.set_result(value)

    def _report(self, running: int, waiting: int) -> None:
        self._running, self._waiting = running, waiting
        if self.on_step:
            self.on_step(running, waiting)
