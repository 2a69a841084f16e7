"""The engine in its own process, behind the same `open()` / `abort()` / `embed()` the server uses.

Why: the engine thread and the HTTP event loop are both Python-heavy, and in one process they share
one GIL (measured: the engine held it ~80 % of the time, starving SSE delivery; docs/benchmarks.md).
In two processes each has its own interpreter. They talk over one multiprocessing pipe: requests and
aborts go down; each engine step's outputs come up as one message, read by the event loop when the
pipe is readable (no extra thread). The child owns the weights; the parent keeps only the tokenizer.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import threading
import traceback
from typing import Any

from swiftkit.errors import SwiftkitError
from swiftkit.serve.engine.engine import Engine, RequestStream
from swiftkit.serve.engine.request import Request, RequestOutput, SamplingParams
from swiftkit.serve.engine.scheduler import QueueFull


def _child_main(cfg_json: str, conn) -> None:
    """Engine process: load the model, run the engine thread, serve pipe messages on the main thread."""
    from swiftkit.serve.config import ServeConfig
    from swiftkit.serve.constrained import GrammarFactory
    from swiftkit.serve.embeddings import load_embedder
    from swiftkit.serve.model import load_served_model

    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock:
            conn.send(msg)

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
            msg = conn.recv()
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
        elif kind == "embed":
            _, call_id, batches = msg

            def done(future, call_id=call_id) -> None:
                error = future.exception()
                send(("embedded", call_id, None if error else future.result(), repr(error) if error else None))

            engine.call(lambda batches=batches: embedder(batches)).add_done_callback(done)
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
        self._ids = itertools.count()
        self._sinks: dict[str, Any] = {}
        self._calls: dict[int, asyncio.Future] = {}
        self._running = self._waiting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.conn = None
        self.proc = None

    def start(self, timeout: float = 600) -> None:
        ctx = mp.get_context("spawn")  # a clean interpreter: no inherited threads or torch state
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(self.cfg.model_dump_json(), child), daemon=True,
                                name="swiftkit-engine")
        self.proc.start()
        child.close()
        if not self.conn.poll(timeout):
            raise SwiftkitError("the engine process did not start in time")
        try:
            msg = self.conn.recv()
        except EOFError:
            raise SwiftkitError("the engine process died while loading the model (see the log above)") from None
        if msg[0] == "failed":
            raise SwiftkitError(f"engine: {msg[1]}", msg[2])

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.conn.send(("stop",))
        except (OSError, ValueError):
            pass
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.terminate()
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self.conn.fileno())
            except (OSError, ValueError, RuntimeError):
                pass

    # -- used by the HTTP handlers (event loop thread) -------------------------------------------
    def _attach(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.conn.fileno(), self._on_readable)

    def open(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
             matcher=None) -> RequestStream:
        """Submit; the grammar matcher is rebuilt in the engine process from `params.constraint`."""
        self._attach()
        if len(self._sinks) >= self.capacity:
            raise QueueFull(f"the request queue is full ({self.capacity - self.cfg.max_num_seqs} waiting)")
        rid = f"req-{next(self._ids)}"
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()
        self._sinks[rid] = outputs.put_nowait
        self.conn.send(("add", rid, list(prompt_ids), params, adapter))
        return RequestStream(self, rid, outputs)

    def abort(self, rid: str) -> None:
        if rid in self._sinks:
            self.conn.send(("abort", rid))

    async def embed(self, batches: list[list[int]]) -> list[list[float]]:
        self._attach()
        call_id = next(self._ids)
        future = self._loop.create_future()
        self._calls[call_id] = future
        self.conn.send(("embed", call_id, batches))
        return await future

    def queue_depth(self) -> int:
        return max(self._waiting, len(self._sinks) - self.cfg.max_num_seqs, 0)

    def num_running(self) -> int:
        return self._running

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                self._handle(self.conn.recv())
        except (EOFError, OSError):
            self._loop.remove_reader(self.conn.fileno())
            for rid, sink in list(self._sinks.items()):
                sink(RequestOutput(rid, [], "", finished=True, finish_reason="error"))
            self._sinks.clear()
        except Exception:  # a bug here must not stop the event loop from serving
            traceback.print_exc()

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
        elif kind == "embedded":
            _, call_id, vectors, error = msg
            future = self._calls.pop(call_id, None)
            if future is not None and not future.done():
                if error:
                    future.set_exception(RuntimeError(error))
                else:
                    future.set_result(vectors)

    def _report(self, running: int, waiting: int) -> None:
        self._running, self._waiting = running, waiting
        if self.on_step:
            self.on_step(running, waiting)
