"""Pure ASGI middleware (no buffering of streams): API key, draining (503), body size, request metrics."""

from __future__ import annotations

import json
import time

from swiftkit.serve import auth
from swiftkit.serve.errors import error_body
from swiftkit.serve.state import ServerState


class Gate:
    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        state = self.state
        if state.draining and path not in ("/health", "/metrics"):
            return await send_json(send, 503, error_body("the server is shutting down", "service_unavailable"))
        headers = dict(scope.get("headers") or [])
        if state.api_key and auth.needs_key(path):
            if not auth.key_ok(state.api_key, headers.get(b"authorization")):
                return await send_json(send, 401, error_body("invalid or missing API key", "authentication_error",
                                                             code="invalid_api_key"))
        if scope["method"] in ("POST", "PUT", "PATCH"):
            receive = await self._read_body(receive, send, headers)
            if receive is None:
                return
        status = {"code": 500}
        started = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        state.inflight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state.inflight -= 1
            if path.startswith("/v1/"):
                # Label by route template: raw paths (made-up ones, model ids) would grow series without bound.
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                state.metrics.requests.labels(route, str(status["code"])).inc()
                state.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _read_body(self, receive, send, headers: dict):
        """The whole body, at most --max-request-bytes (413 beyond, before parsing), replayed to the app;
        None when there is nothing more to do (the 413 was sent, or the client left)."""
        limit = self.state.limits.max_request_bytes
        too_large = error_body(f"the request body is larger than {limit} bytes (--max-request-bytes)",
                               "invalid_request_error", code="request_too_large")
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            await send_json(send, 413, too_large)
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # disconnected while sending the body: nobody to answer
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await send_json(send, 413, too_large)
                return None
            if not message.get("more_body"):
                return _replay(chunks, receive)


def _replay(chunks: list[bytes], receive):
    """A `receive` that hands the app the buffered body once, then waits on the real one (disconnects)."""
    pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})
