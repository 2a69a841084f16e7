"""Several models behind one endpoint: `swiftkit serve --config deployment.yaml` with a `models:` list.

Each model replica is today's single-model server (a ServerState, its routes and Gate, over one engine
process); this module only puts them side by side. A request is routed by the `model` of its JSON body
(or the id in /v1/models/ID) to the least-loaded live replica of the model that serves that name; every
other route (the model list, admin, the playground) goes to the first replica, whose /v1/models lists
the whole deployment. /health and /metrics are answered here, for every worker.

A worker whose engine process dies fails its open requests with a 503 at once (EngineProcess sees the
pipe close) and is restarted with back-off (1 s, doubling to 30 s, reset after a minute up). Meanwhile its
engine is a stand-in that refuses work, so requests for the model still pass its Gate (a wrong key is a
401, every request has its usage row) and then get a 503 `worker_unavailable`; the other models keep serving.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from swiftkit.console import console, summary
from swiftkit.errors import SwiftkitError
from swiftkit.serve.config import ServeConfig
from swiftkit.serve.errors import Unavailable

BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET = 1.0, 30.0, 60.0


def model_configs(cfg: ServeConfig) -> list[tuple[str, int, ServeConfig]]:
    """(name, replicas, the model's own ServeConfig) of every `models:` entry, checked before anything loads.

    An entry's fields override the top-level ones (server-wide options and engine defaults).
    """
    from swiftkit.resolve import resolve_model_ref
    from swiftkit.serve.model import adapter_path, parse_adapters

    server_wide = cfg.model_dump(exclude={"models"})
    seen: dict[str, str] = {}
    out = []
    for i, entry in enumerate(cfg.models):
        name = entry.name
        where = f"models[{i}] ({name})"
        if entry.engine == "vllm":
            raise SwiftkitError(f"{where}: engine vllm is not supported in a deployment", "serve it alone with --model")
        try:
            ref = resolve_model_ref(entry.model)
            adapters = parse_adapters(entry.adapter)
            for adapter, aref in adapters.items():
                adapter_path(adapter, aref, ref)
        except SwiftkitError as exc:
            raise SwiftkitError(f"{where}: {exc.message}", exc.hint) from None
        for served in (name, *adapters):
            if served in seen:
                raise SwiftkitError(f"{where}: the name `{served}` is already served by {seen[served]}",
                                    "give each model a unique served_model_name and each adapter a unique name")
            seen[served] = where
        values = {**server_wide, **entry.model_dump(exclude_unset=True, exclude={"replicas"}),
                  "served_model_name": name, "engine_process": True}
        out.append((name, entry.replicas, ServeConfig.model_validate(values)))
    return out


class EngineDown:
    """A dead worker's engine until its restart: every request for it is a 503 at once."""

    class Busy(Exception):
        """Never raised (an engine's queue-full error, which callers catch): a down engine refuses with a 503."""

    proc = None

    def __init__(self, model: str):
        self.model = model

    def _refuse(self):
        raise Unavailable(f"the model `{self.model}` has no running worker (its engine process died and is "
                          "restarting); retry shortly", code="worker_unavailable")

    def open(self, *args, **kwargs):
        self._refuse()

    async def embed(self, batches):
        self._refuse()

    def abort(self, rid) -> None:
        pass

    def alive(self) -> bool:
        return False

    def queue_depth(self) -> int:
        return 0

    def num_running(self) -> int:
        return 0

    def stop(self) -> None:
        pass


@dataclass
class Worker:
    """One replica of one model: its ServerState (engine process inside), the app over it, its health."""

    model: str
    replica: int
    cfg: ServeConfig
    state: Any
    app: Any
    status: str = "starting"  # starting, ready, restarting
    restarts: int = 0
    up_since: float = 0.0
    failures: int = 0  # deaths in a row without a minute up: the back-off's exponent
    last_error: str | None = None

    def ready(self) -> bool:
        return self.status == "ready" and self.state.engine.alive()

    def load(self) -> int:
        return self.state.inflight


@dataclass
class Deployment:
    workers: dict[str, list[Worker]]  # model name -> its replicas
    owner: dict[str, str]  # every served name (models and adapters) -> its model's name
    cards: list
    metrics: Any
    up: Any = None  # the swiftkit_worker_up gauge
    restarted: Any = None  # the swiftkit_worker_restarts counter
    tasks: set = field(default_factory=set)
    draining: bool = False

    def model_names(self) -> list[str]:
        return list(self.owner)

    def model_cards(self) -> list:
        return self.cards

    def all_workers(self) -> list[Worker]:
        return [w for replicas in self.workers.values() for w in replicas]

    def pick(self, name: str | None) -> Worker:
        """The least-loaded live replica of the model serving `name` (a down one if none is live: it answers
        503); the first worker for any other request (the model list, admin, a 404 naming every model)."""
        model = self.owner.get(name) if name is not None else None
        if model is None:
            return self.all_workers()[0]
        replicas = self.workers[model]
        live = [w for w in replicas if w.ready()]
        return min(live or replicas, key=Worker.load)

    # -- worker deaths and restarts (event loop) ---------------------------------------------------
    def watch(self, worker: Worker) -> None:
        worker.state.engine.on_death = lambda: self._died(worker)
        worker.state.engine.after_death = f"the worker of `{worker.model}` is being restarted; retry shortly"
        worker.status, worker.up_since = "ready", time.monotonic()
        self.up.labels(worker.model, str(worker.replica)).set(1)

    def _died(self, worker: Worker) -> None:
        code = worker.state.engine.proc.exitcode if worker.state.engine.proc is not None else None
        worker.last_error = f"engine process exited ({code})"
        worker.state.engine.stop()
        worker.state.engine = EngineDown(worker.model)
        self.up.labels(worker.model, str(worker.replica)).set(0)
        if self.draining:
            worker.status = "stopped"
            return
        worker.failures = 1 if time.monotonic() - worker.up_since > BACKOFF_RESET else worker.failures + 1
        worker.status = "restarting"
        console.print(f"[bold red]worker {worker.model}#{worker.replica} died[/] ({worker.last_error}); "
                      f"restarting in {self._delay(worker):.0f} s")
        self._spawn(self._restart(worker))

    def _delay(self, worker: Worker) -> float:
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (worker.failures - 1))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _restart(self, worker: Worker) -> None:
        from swiftkit.serve.engine.remote import EngineProcess

        await asyncio.sleep(self._delay(worker))
        if self.draining:
            return
        cfg = worker.cfg
        engine = EngineProcess(cfg, cfg.max_num_seqs, cfg.max_queue, on_step=self.metrics.on_step)
        try:
            await asyncio.get_running_loop().run_in_executor(None, engine.start)
        except SwiftkitError as exc:
            worker.last_error, worker.failures = exc.message, worker.failures + 1
            console.print(f"[bold red]worker {worker.model}#{worker.replica} failed to start[/]: {exc.message}")
            engine.stop()
            return self._spawn(self._restart(worker))
        engine.attach(asyncio.get_running_loop())
        worker.state.engine = engine
        worker.restarts += 1
        self.restarted.labels(worker.model, str(worker.replica)).inc()
        self.watch(worker)
        console.print(f"[green]worker {worker.model}#{worker.replica} is back[/] (restart {worker.restarts})")

    def health(self) -> tuple[int, dict]:
        models = {}
        for model, replicas in self.workers.items():
            models[model] = {
                "ready": sum(w.ready() for w in replicas), "replicas": len(replicas),
                "workers": [{"replica": w.replica, "status": _status(w),
                             "pid": w.state.engine.proc.pid if w.state.engine.proc else None,
                             "restarts": w.restarts, "inflight": w.load(), "last_error": w.last_error}
                            for w in replicas],
            }
        ready = [m["ready"] > 0 for m in models.values()]
        if self.draining:
            return 503, {"status": "draining", "models": models}
        if not any(ready):
            return 503, {"status": "unavailable", "models": models}
        return 200, {"status": "ok" if all(ready) else "degraded", "models": models}


def _status(worker: Worker) -> str:
    if worker.ready():
        return "ready"
    return "dead" if worker.status == "ready" else worker.status  # dead: the death is being handled


class DeploymentApp:
    """The ASGI app of a deployment: answers /health and /metrics, routes everything else to a worker's app."""

    def __init__(self, deployment: Deployment, max_request_bytes: int):
        self.deployment, self.max_request_bytes = deployment, max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return await self.deployment.all_workers()[0].app(scope, receive, send)
        path = scope["path"]
        if path == "/health":
            status, body = self.deployment.health()
            return await _send_json(send, status, body)
        if path == "/metrics":
            return await self._metrics(send)
        name = None
        if scope["method"] == "POST":
            receive, name = await self._model_of_body(receive)
        elif path.startswith("/v1/models/"):
            name = path[len("/v1/models/"):]
        await self.deployment.pick(name).app(scope, receive, send)

    async def _model_of_body(self, receive):
        """(a receive that replays the body, the body's `model` or None); a body over the size limit is not
        parsed (the worker's Gate answers its 413)."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body") or size > self.max_request_bytes:
                break
        model = None
        if size <= self.max_request_bytes and messages[-1]["type"] == "http.request":
            try:
                parsed = json.loads(b"".join(m.get("body", b"") for m in messages))
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
                model = parsed["model"]

        async def replay():
            return messages.pop(0) if messages else await receive()

        return replay, model

    async def _metrics(self, send) -> None:
        workers = [w for w in self.deployment.all_workers() if w.ready()]
        metrics = self.deployment.metrics
        metrics.queue_depth.set(sum(w.state.engine.queue_depth() for w in workers))
        metrics.running.set(sum(w.state.engine.num_running() for w in workers))
        data = metrics.render()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                for worker in self.deployment.all_workers():
                    worker.state.engine.attach(loop)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def build(cfg: ServeConfig) -> Deployment:
    """Every worker's state and app, engines started in parallel (a failure to load is an error here)."""
    from prometheus_client import Counter, Gauge

    from swiftkit.serve.app import create_app
    from swiftkit.serve.constrained import GrammarFactory
    from swiftkit.serve.engine.remote import EngineProcess
    from swiftkit.serve.metrics import Metrics
    from swiftkit.serve.model import load_served_model, tool_parser_for
    from swiftkit.serve.routes.system import model_cards
    from swiftkit.serve.server import allowed_networks, embedding_info, guards, tenancy
    from swiftkit.serve.state import ServerState

    configs = model_configs(cfg)
    metrics = Metrics()
    hooks, networks = guards(cfg), allowed_networks(cfg.allow_ip)
    shared_tenancy = tenancy(cfg, metrics)
    deployment = Deployment(
        {}, {}, [], metrics,
        up=Gauge("swiftkit_worker_up", "1 while a worker's engine process runs", ["model", "replica"],
                 registry=metrics.registry),
        restarted=Counter("swiftkit_worker_restarts", "Engine processes restarted after dying", ["model", "replica"],
                          registry=metrics.registry),
    )
    pool = ThreadPoolExecutor(cfg.tokenizer_threads, thread_name_prefix="swiftkit-prep")
    for name, replicas, mcfg in configs:
        served = load_served_model(mcfg, name=name, weights=False)
        deployment.cards += model_cards(served)
        deployment.owner.update({n: name for n in (served.name, *served.adapters)})
        grammar = GrammarFactory(served.tokenizer, served.vocab_size, served.eos_ids)
        embedder = embedding_info(mcfg.embedding_model, served)
        for replica in range(replicas):
            engine = EngineProcess(mcfg, mcfg.max_num_seqs, mcfg.max_queue, on_step=metrics.on_step)
            state = ServerState(
                served=served, engine=engine, metrics=metrics, grammar=grammar,
                tool_format=tool_parser_for(served.chat_template, mcfg.tool_parser), limits=mcfg,
                api_key=cfg.api_key, admin_key=cfg.admin_key, embedder=embedder, tenancy=shared_tenancy,
                guards=hooks, allowed_networks=networks, pool=pool, deployment=deployment,
            )
            deployment.workers.setdefault(name, []).append(Worker(name, replica, mcfg, state, create_app(state)))
    return deployment


def start_engines(deployment: Deployment) -> None:
    workers = deployment.all_workers()
    with ThreadPoolExecutor(len(workers)) as starting:
        futures = [starting.submit(w.state.engine.start) for w in workers]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for w in workers:
            w.state.engine.stop()
        raise errors[0]
    for w in workers:
        deployment.watch(w)


def run(cfg: ServeConfig) -> None:
    """`swiftkit serve`: one model (server.run, unchanged), or the deployment of a `models:` list."""
    from swiftkit.serve import server

    if not cfg.models:
        return server.run(cfg)
    serve_deployment(cfg)


def serve_deployment(cfg: ServeConfig) -> None:
    import uvicorn

    from swiftkit.serve.server import _auth_summary, _check_port

    _check_port(cfg.host, cfg.port)
    sys.setswitchinterval(0.0005)  # as in server.run: the reader threads must win the GIL back quickly
    deployment = build(cfg)
    states = [w.state for w in deployment.all_workers()]
    app = DeploymentApp(deployment, cfg.max_request_bytes)

    class Server(uvicorn.Server):
        """uvicorn, except that SIGTERM/SIGINT first drains every worker: new requests 503, running ones finish."""

        def handle_exit(self, sig: int, frame) -> None:
            if deployment.draining or sig == signal.SIGINT and self.should_exit:
                return super().handle_exit(sig, frame)
            deployment.draining = True
            for state in states:
                state.draining = True
            inflight = sum(s.inflight for s in states)
            console.print(f"[yellow]draining[/]: {inflight} request(s) in flight, new ones get 503")
            asyncio.get_event_loop().call_soon_threadsafe(lambda: asyncio.ensure_future(drain(self)))

    async def drain(server: uvicorn.Server) -> None:
        deadline = time.monotonic() + cfg.drain_timeout
        while sum(s.inflight for s in states) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        server.should_exit = True

    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=cfg.log_requests,
                            timeout_graceful_shutdown=5)
    server = Server(config)
    start_engines(deployment)
    summary("swiftkit serve", [
        *((f"model {name}", f"{len(ws)} replica(s), adapters: {', '.join(ws[0].state.served.adapters) or 'none'}, "
           f"context {ws[0].state.served.max_model_len}") for name, ws in deployment.workers.items()),
        ("url", f"http://{cfg.host}:{cfg.port}/v1"), ("auth", _auth_summary(cfg)),
    ])
    try:
        server.run()
    except OSError as exc:
        raise SwiftkitError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}", "choose another --port") from None
    finally:
        deployment.draining = True
        for state in states:
            state.engine.stop()
        if states[0].tenancy is not None:
            states[0].tenancy.close()
    console.print("[bold]stopped[/]")
