"""Health, version, Prometheus metrics and the model list: what load balancers, scrapers and SDKs ask first."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from swiftkit import __version__
from swiftkit.serve.protocol import ModelCard, ModelList
from swiftkit.serve.state import ServerState


def install(app: FastAPI, state: ServerState) -> None:
    served = state.served

    @app.get("/health", responses={503: {"description": "Draining, or the engine is not running"}})
    async def health() -> Response:
        alive = getattr(state.engine, "alive", None)
        if alive is not None and not alive():
            return JSONResponse({"status": "engine_dead"}, status_code=503)
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/version")
    async def version() -> dict:
        return {"version": __version__}

    @app.get("/metrics", response_class=Response,
             responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}})
    async def metrics() -> Response:
        state.metrics.queue_depth.set(state.engine.queue_depth())
        state.metrics.running.set(state.engine.num_running())
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=ModelList)
    async def models(request: Request) -> ModelList:
        deployment = state.deployment  # several models behind this endpoint: every one of them
        cards = deployment.model_cards() if deployment is not None else model_cards(served)
        key = getattr(request.state, "swiftkit_key", None)  # a tenant key sees the models it may use
        if key is not None and key.models is not None:
            cards = [c for c in cards if c.id in key.models]
        return ModelList(data=cards)

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard)
    async def model_card(model_id: str) -> ModelCard:
        state.adapter_for(model_id)
        return ModelCard(id=model_id, max_model_len=served.max_model_len)


def model_cards(served) -> list[ModelCard]:
    """The /v1/models entries of one served model: the base, then each adapter."""
    cards = [ModelCard(id=served.name, root=str(served.ref.path), max_model_len=served.max_model_len)]
    return cards + [ModelCard(id=name, root=str(path), parent=served.name, max_model_len=served.max_model_len)
                    for name, path in served.adapters.items()]
