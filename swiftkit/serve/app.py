"""The FastAPI app: assembles the route modules (serve/routes/) over one ServerState; no handler lives here."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from fastapi import FastAPI

from swiftkit import __version__
from swiftkit.serve.errors import ERROR_STATUSES, install_handlers
from swiftkit.serve.gate import Gate
from swiftkit.serve.routes import adapters, admin, chat, completions, embeddings, playground, responses, system, tokenization
from swiftkit.serve.state import ServerState

__all__ = ["ServerState", "create_app"]


def create_app(state: ServerState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        attach = getattr(state.engine, "attach", None)
        if attach is not None:  # the engine process: its messages are read into this loop from now on
            attach(asyncio.get_running_loop())
        runtime = state.adapters
        watcher = asyncio.create_task(runtime.watch_forever()) if runtime is not None and runtime.watch else None
        yield
        if watcher is not None:
            watcher.cancel()

    app = FastAPI(title="swiftkit serve", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API over swiftkit's continuous-batching engine.")
    app.state.swiftkit = state
    install_handlers(app)
    app.add_middleware(Gate, state=state)
    # Route order is the OpenAPI document's order.
    for routes in (system, tokenization, chat, completions, embeddings, responses, admin, adapters, playground):
        routes.install(app, state)
    app.openapi = functools.partial(_openapi, app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document with the errors this server really sends: every request-validation error is a
    400 (never FastAPI's default 422), each in OpenAI's error shape, beside 401/404/413/429/503."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": {"type": ["string", "null"]}, "code": {"type": ["string", "integer", "null"]}}}},
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            statuses = ERROR_STATUSES if method == "post" or path.startswith("/v1/") else {}
            for status, description in statuses.items():
                responses.setdefault(str(status), {"description": description, "content": error})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    app.openapi_schema = doc
    return doc
