"""`swiftkit serve`: load the model, start the engine thread, run uvicorn, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from swiftkit.console import console, summary
from swiftkit.errors import SwiftkitError
from swiftkit.serve.config import ServeConfig


def build_state(cfg: ServeConfig):
    from swiftkit.serve.constrained import GrammarFactory
    from swiftkit.serve.embeddings import load_embedder
    from swiftkit.serve.metrics import Metrics
    from swiftkit.serve.model import load_served_model, tool_parser_for
    from swiftkit.serve.state import ServerState

    metrics = Metrics()
    hooks = guards(cfg)  # a bad --guard or --allow-ip fails before the model loads
    networks = allowed_networks(cfg.allow_ip)
    runtime = None
    if cfg.adapter_dir:  # a missing --adapter-dir fails before the model loads
        from swiftkit.serve.adapters import RuntimeAdapters

        runtime = RuntimeAdapters.from_dirs(cfg.adapter_dir, cfg.watch_adapters)
    name = cfg.served_model_name or cfg.model
    if cfg.engine == "vllm":
        from swiftkit.serve.engine.vllm import VLLMEngine, require_vllm

        require_vllm()
        served = load_served_model(cfg, name=name, weights=False)  # vLLM loads the weights itself
        engine = VLLMEngine(cfg, served, on_step=metrics.on_step)
        if cfg.embedding_model:
            engine.embedder = embedder = load_embedder(cfg.embedding_model, served)
        else:
            embedder = embedding_info(None, served)
    elif cfg.engine_process:
        from swiftkit.serve.engine.remote import EngineProcess

        served = load_served_model(cfg, name=name, weights=False)  # the weights live in the engine process
        engine = EngineProcess(cfg, cfg.max_num_seqs, cfg.max_queue, on_step=metrics.on_step)
        embedder = embedding_info(cfg.embedding_model, served)
    else:
        served = load_served_model(cfg, name=name)
        engine = served.build_engine(cfg, on_step=metrics.on_step)
        engine.embedder = embedder = load_embedder(cfg.embedding_model, served)
    state = ServerState(
        served=served, engine=engine, metrics=metrics,
        grammar=GrammarFactory(served.tokenizer, served.vocab_size, served.eos_ids),
        tool_format=tool_parser_for(served.chat_template, cfg.tool_parser), limits=cfg,
        api_key=cfg.api_key, admin_key=cfg.admin_key, embedder=embedder, tenancy=tenancy(cfg, metrics),
        guards=hooks, allowed_networks=networks,
        pool=ThreadPoolExecutor(cfg.tokenizer_threads, thread_name_prefix="swiftkit-prep"),
    )
    if runtime is not None:
        runtime.state, state.adapters = state, runtime
    return state


def allowed_networks(specs: list[str]) -> list:
    import ipaddress

    try:
        return [ipaddress.ip_network(s, strict=False) for s in specs]
    except ValueError as exc:
        raise SwiftkitError(f"--allow-ip: {exc}", "give addresses or networks, e.g. --allow-ip 10.0.0.0/8") from None


def guards(cfg: ServeConfig):
    if not cfg.guard and not cfg.blocklist:
        return None
    from swiftkit.serve.guards import Guards

    return Guards(cfg.guard, cfg.blocklist)


def tenancy(cfg: ServeConfig, metrics):
    if cfg.database is None:
        return None
    from swiftkit.serve import db
    from swiftkit.serve.tenancy import Tenancy

    return Tenancy(db.connect(cfg.database), metrics, cfg.audit_buffer)


@dataclass
class EmbeddingInfo:
    """What the HTTP side needs to validate embedding inputs when the encoder runs in the engine process."""

    tokenizer: object
    name: str
    max_len: int


def embedding_info(ref: str | None, served) -> EmbeddingInfo:
    if ref is None:
        return EmbeddingInfo(served.tokenizer, served.name, served.max_model_len)
    from transformers import AutoConfig, AutoTokenizer

    from swiftkit.resolve import resolve_model_ref

    path = resolve_model_ref(ref).base_path
    max_len = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", 512)
    return EmbeddingInfo(AutoTokenizer.from_pretrained(path), ref, max_len)


def _auth_summary(cfg: ServeConfig) -> str:
    kinds = [name for name, on in (("tenant keys", cfg.database), ("api key", cfg.api_key), ("admin key", cfg.admin_key)) if on]
    return ", ".join(kinds) or "none"


def _check_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SwiftkitError(f"cannot listen on {host}:{port}: {exc.strerror}", "choose another --port") from None


def run(cfg: ServeConfig) -> None:
    import uvicorn

    from swiftkit.serve.app import create_app

    _check_port(cfg.host, cfg.port)  # fail before spending time loading the model
    # The engine thread releases the GIL in every torch op and must win it back from the event loop
    # thread; at the default 5 ms switch interval a busy loop stalls each decode step for milliseconds.
    sys.setswitchinterval(0.0005)
    state = build_state(cfg)
    app = create_app(state)

    class Server(uvicorn.Server):
        """uvicorn, except that SIGTERM/SIGINT first drains: new requests get 503, running ones finish."""

        def handle_exit(self, sig: int, frame) -> None:
            if state.draining or sig == signal.SIGINT and self.should_exit:
                return super().handle_exit(sig, frame)
            state.draining = True
            console.print(f"[yellow]draining[/]: {state.inflight} request(s) in flight, new ones get 503")
            asyncio.get_event_loop().call_soon_threadsafe(lambda: asyncio.ensure_future(drain(self)))

    async def drain(server: uvicorn.Server) -> None:
        deadline = time.monotonic() + cfg.drain_timeout
        while state.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        server.should_exit = True

    def engine_died() -> None:
        # No restart: reloading the model in a server that lost its engine hides a crash loop from
        # whoever supervises it. Open requests have had their 503; new ones get 503 until the exit.
        console.print("[bold red]error:[/] the engine process died; failing open requests with 503 and exiting")
        state.draining = True
        asyncio.ensure_future(drain(server))

    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=cfg.log_requests,
                            timeout_graceful_shutdown=5)
    server = Server(config)
    state.engine.start()
    if hasattr(state.engine, "on_death"):
        state.engine.on_death = engine_died
    summary("swiftkit serve", [
        ("model", state.served.name), ("adapters", ", ".join(state.served.adapters) or "none"),
        *([("adapters at run time", ", ".join(map(str, state.adapters.roots)) + (" (watched)" if state.adapters.watch else ""))]
          if state.adapters is not None else []),
        ("context", state.served.max_model_len), ("max batch", cfg.max_num_seqs),
        ("url", f"http://{cfg.host}:{cfg.port}/v1"), ("auth", _auth_summary(cfg)),
    ])
    try:
        server.run()
    except OSError as exc:
        raise SwiftkitError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}", "choose another --port") from None
    finally:
        state.engine.stop()
        if state.tenancy is not None:  # after the drain: every finished request's row is written
            state.tenancy.close()
    if getattr(state.engine, "dead", False):
        sys.exit(1)  # a supervisor (systemd Restart=on-failure, Kubernetes) restarts the server
    console.print("[bold]stopped[/]")
