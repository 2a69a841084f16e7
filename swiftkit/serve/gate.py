"""Pure ASGI middleware (streams pass through unbuffered): keys, limits, guards, draining (503), body size,
metrics, usage rows."""

from __future__ import annotations

import json
import math
import time

from swiftkit.serve import auth, usage
from swiftkit.serve.errors import AuthError, BadRequest, error_body
from swiftkit.serve.guards import GUARDED_PATHS, GuardFailed, Reject
from swiftkit.serve.state import ServerState
from swiftkit.serve.tenancy import Forbidden, Identity, RateLimited
from swiftkit.serve.usage import RequestRecord

AUDITED_FIELDS = ("instructions", "messages", "prompt", "input")


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
        if state.tenancy is not None and auth.needs_key(path):
            return await self._tenant_call(scope, receive, send, headers)
        if auth.needs_key(path):
            if not self._ip_allowed(scope):
                return await send_error(send, _ip_refused(scope))
            token = auth.bearer(headers.get(b"authorization"))
            if auth.is_admin_path(path) and not auth.matches(token, state.admin_key):
                return await send_error(send, AuthError("this route needs the admin key (--admin-key)", code="invalid_api_key"))
            if state.api_key and not (auth.matches(token, state.api_key) or auth.matches(token, state.admin_key)):
                return await send_error(send, AuthError("invalid or missing API key", code="invalid_api_key"))
        guard = None
        if scope["method"] in ("POST", "PUT", "PATCH"):
            receive, body = await self._read_body(receive, send, headers)
            if receive is None:
                return
            if state.guards is not None:
                try:
                    receive, guard = self._guard_request(path, _parse(body), receive, None)
                except (Reject, GuardFailed) as exc:
                    return await send_error(send, exc)
        await self._call(scope, receive, send, path, guard=guard)

    def _guard_request(self, path: str, parsed, receive, tenant: str | None, record: RequestRecord | None = None):
        """Run the guards on a request: (receive with the body they rewrote, or the same; the response guard's
        context, when the response is to be checked too). Raises Reject."""
        guards = self.state.guards
        if guards is None or path not in GUARDED_PATHS or not isinstance(parsed, dict):
            return receive, None
        context = {"endpoint": path, "model": parsed.get("model"), "tenant": tenant}
        changed = guards.checked("request", parsed, context)
        if changed is not None:
            receive = _replay(json.dumps(changed).encode(), receive)
            if record is not None and record.request is not None:  # audit what ran (a redaction stays redacted)
                record.request = json.dumps({k: changed[k] for k in AUDITED_FIELDS if k in changed}, ensure_ascii=False)
        return receive, (None if parsed.get("stream") else context)

    async def _call(self, scope, receive, send, path: str, record: RequestRecord | None = None,
                    extra_headers: list[tuple[bytes, bytes]] | None = None, guard: dict | None = None) -> None:
        """Run the app; `guard` (a context): hold a 200 JSON response for the response guards first."""
        state = self.state
        status = {"code": 500}
        started = time.perf_counter()
        held: list = []

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if extra_headers:
                    message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
                if guard is not None and message["status"] == 200:
                    held.append(message)
                    return
            elif held:
                held.append(message)
                if not message.get("more_body"):
                    await self._guard_response(send, held, guard, extra_headers, status, record)
                return
            elif record is not None and status["code"] >= 400 and record.error_type is None:
                record.error_type = _error_type(message.get("body", b""))
            await send(message)

        state.inflight += 1
        token = usage.current.set(record) if record is not None else None
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state.inflight -= 1
            if token is not None:
                usage.current.reset(token)
            # Label by route template: raw paths (made-up ones, model ids) would grow series without bound.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if path.startswith("/v1/"):
                state.metrics.requests.labels(route, str(status["code"])).inc()
                state.metrics.latency.labels(route).observe(time.perf_counter() - started)
            if record is not None:
                record.status = status["code"]
                record.endpoint = route if route != "unmatched" else path[:200]

    async def _guard_response(self, send, held: list, context: dict, extra_headers, status: dict,
                              record: RequestRecord | None) -> None:
        start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
        try:
            changed = self.state.guards.checked("response", json.loads(body), context)
        except (Reject, GuardFailed) as exc:
            status["code"] = exc.status
            if record is not None:
                record.error_type = exc.type
            return await send_error(send, exc, extra_headers)
        if changed is not None:
            body = json.dumps(changed).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _tenant_call(self, scope, receive, send, headers: dict) -> None:
        """With --database: who is calling (tenant key, shared key or admin key), their limits, the usage row."""
        state, path = self.state, scope["path"]
        tenancy = state.tenancy
        record = RequestRecord(endpoint=path[:200])
        who = Identity()
        try:
            if not self._ip_allowed(scope):
                raise _ip_refused(scope)
            who = await self._identify(headers)
            scope.setdefault("state", {})["swiftkit_key"] = who.key  # routes that answer per key (/v1/models)
            if auth.is_admin_path(path) and not who.admin:
                raise Forbidden("this route needs an admin key", code="admin_only")
            record.tenant, record.key_id = who.tenant, who.key_id
            parsed = None
            if scope["method"] in ("POST", "PUT", "PATCH"):
                receive, body = await self._read_body(receive, send, headers)
                if receive is None:  # the 413 went out, or the client left
                    record.status = 413
                    tenancy.finish(who, record)
                    return
                parsed = _parse(body)
            model = _describe(record, parsed, state, path)
            extra = await tenancy.admit(who.key, model) if who.key is not None else []
            receive, guard = self._guard_request(path, parsed, receive, who.tenant, record)
        except (AuthError, Forbidden, RateLimited, Reject, GuardFailed) as exc:
            record.status, record.error_type = exc.status, exc.type
            extra = tenancy.headers(who.key) if who.key is not None else []
            if isinstance(exc, RateLimited):
                extra.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
            await send_error(send, exc, extra)
            tenancy.finish(who, record)
            return
        try:
            await self._call(scope, receive, send, path, record, extra, guard)
        finally:
            tenancy.finish(who, record)

    def _ip_allowed(self, scope) -> bool:
        networks = self.state.allowed_networks
        if not networks:
            return True
        import ipaddress

        client = scope.get("client")
        try:
            address = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        return address is not None and any(address in n for n in networks)

    async def _identify(self, headers: dict) -> Identity:
        state = self.state
        token = auth.bearer(headers.get(b"authorization"))
        if token is None:
            raise AuthError("missing API key: send `Authorization: Bearer KEY`", code="invalid_api_key")
        if auth.matches(token, state.admin_key):
            return Identity(admin=True)
        if auth.matches(token, state.api_key):
            return Identity()
        key = await state.tenancy.lookup(token)
        return Identity(key=key, admin=key.admin)

    async def _read_body(self, receive, send, headers: dict):
        """(receive, body): the whole body, at most --max-request-bytes (413 beyond, before parsing), replayed
        to the app; (None, None) when there is nothing more to do (the 413 was sent, or the client left)."""
        limit = self.state.limits.max_request_bytes
        too_large = error_body(f"the request body is larger than {limit} bytes (--max-request-bytes)",
                               "invalid_request_error", code="request_too_large")
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            await send_json(send, 413, too_large)
            return None, None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # disconnected while sending the body: nobody to answer
                return None, None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await send_json(send, 413, too_large)
                return None, None
            if not message.get("more_body"):
                body = b"".join(chunks)
                return _replay(body, receive), body


def _replay(body: bytes, receive):
    """A `receive` that hands the app the buffered body once, then waits on the real one (disconnects)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def _ip_refused(scope) -> Forbidden:
    client = scope.get("client")
    return Forbidden(f"requests from {client[0] if client else 'this client'} are not allowed (--allow-ip)",
                     code="ip_not_allowed")


async def send_error(send, exc: BadRequest, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_json(send, exc.status, error_body(exc.message, exc.type, exc.param, exc.code), headers)


def _error_type(body: bytes) -> str | None:
    """The `type` of an OpenAI-shaped error body (for the usage row)."""
    try:
        return str(json.loads(body)["error"]["type"])[:64]
    except (ValueError, KeyError, TypeError):
        return None


def _parse(body: bytes | None):
    try:
        return json.loads(body) if body else None
    except ValueError:  # not JSON: the route answers with its 400
        return None


def _describe(record: RequestRecord, parsed, state: ServerState, path: str) -> str | None:
    """Fill the record's model, adapter and (--audit-content) request; the model the request names."""
    model = None
    if isinstance(parsed, dict):
        model = parsed.get("model") if isinstance(parsed.get("model"), str) else None
        if state.limits.audit_content:
            kept = {k: parsed[k] for k in AUDITED_FIELDS if k in parsed}
            record.request = json.dumps(kept, ensure_ascii=False)
    elif path.startswith("/v1/models/"):
        model = path[len("/v1/models/"):]
    if model is not None:
        record.model = model[:400]
        if model in state.served.adapters:
            record.adapter = model
    return model
