"""The FastAPI app: OpenAI routes over the engine. Handlers validate, call generation.py, shape JSON."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from swiftkit import __version__
from swiftkit.errors import SwiftkitError
from swiftkit.serve import auth
from swiftkit.serve.constrained import GrammarFactory, strict_objects, tool_schema
from swiftkit.serve.engine.detokenizer import hidden_token_ids
from swiftkit.serve.engine.request import SamplingParams, TokenLogprob
from swiftkit.serve.errors import ERROR_STATUSES, ModelNotFound, error_body, install_handlers
from swiftkit.serve.errors import BadRequest as BadRequestError
from swiftkit.serve.generation import (
    Choice,
    ChoiceRun,
    chat_messages,
    check_json_size,
    check_limits,
    check_prompt,
    check_prompt_chars,
    check_request_tokens,
    sampling_params,
    until_disconnect,
)
from swiftkit.serve.metrics import Metrics
from swiftkit.serve.model import ServedModel
from swiftkit.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Delta,
    DeltaToolCall,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    NamedToolChoice,
    TokenizeRequest,
    TokenizeResponse,
    TokenLogprobEntry,
    TopLogprob,
    Usage,
    new_id,
)
from swiftkit.serve.tools import OutputParser, calls_from_constrained


@dataclass
class ServerState:
    served: ServedModel
    engine: Any
    metrics: Metrics
    grammar: GrammarFactory
    tool_format: str
    limits: Any  # the ServeConfig: its size limits (generation.check_limits)
    api_key: str | None = None
    embedder: Any = None  # callable(list[list[int]]) -> list[list[float]], run on the engine thread
    draining: bool = False
    inflight: int = 0
    # Tokenizing, chat templates and grammar compilation take seconds on big inputs: they run here,
    # off the event loop (the tokenizers release the GIL), and the pool's size bounds how many at once.
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="swiftkit-prep"))
    _token_text: dict[int, str] = field(default_factory=dict)
    _hidden: frozenset[int] | None = None

    @property
    def vocab_size(self) -> int:
        return self.served.vocab_size

    async def offload(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args))

    def adapter_for(self, model: str) -> str | None:
        """The adapter a request's `model` selects (None: the base); 404 for names not served."""
        if model in (self.served.name, self.served.ref.ref):
            return None
        if model in self.served.adapters:
            return model
        raise ModelNotFound(f"the model `{model}` does not exist; served: {', '.join(self.model_names())}",
                            param="model", code="model_not_found")

    def model_names(self) -> list[str]:
        return [self.served.name, *self.served.adapters]

    def token_text(self, token_id: int, skip_special: bool = False) -> str:
        """A token's text in logprobs; with `skip_special`, hidden special tokens (eos) are "" as in the
        generated text, so the tokens of a choice concatenate to its text."""
        if self._hidden is None:
            self._hidden = hidden_token_ids(self.served.tokenizer)
        if skip_special and token_id in self._hidden:
            return ""
        text = self._token_text.get(token_id)
        if text is None:
            text = self._token_text[token_id] = self.served.tokenizer.decode([token_id])
        return text


# ------------------------------------------------------------------------------ middleware
class Gate:
    """Pure ASGI middleware (no buffering of streams): API key, draining (503), request metrics."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        state = self.state
        if state.draining and path not in ("/health", "/metrics"):
            return await _send_json(send, 503, error_body("the server is shutting down", "service_unavailable"))
        headers = dict(scope.get("headers") or [])
        if state.api_key and auth.needs_key(path):
            if not auth.key_ok(state.api_key, headers.get(b"authorization")):
                return await _send_json(send, 401, error_body("invalid or missing API key", "authentication_error",
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
            await _send_json(send, 413, too_large)
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # disconnected while sending the body: nobody to answer
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await _send_json(send, 413, too_large)
                return None
            if not message.get("more_body"):
                return _replay(chunks, receive)


def _replay(chunks: list[bytes], receive):
    """A `receive` that hands the app the buffered body once, then waits on the real one (disconnects)."""
    pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def sse(obj) -> str:
    payload = obj if isinstance(obj, str) else obj.model_dump_json(exclude_none=True)
    return f"data: {payload}\n\n"


def streaming(body: AsyncIterator[str]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for piece in body:
                yield piece
        except SwiftkitError as exc:  # after the 200 went out (e.g. the engine died): an error event ends the stream
            err = error_body(exc.message, getattr(exc, "type", "invalid_request_error"), getattr(exc, "param", None),
                             getattr(exc, "code", None))
            yield f"data: {json.dumps(err)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# ------------------------------------------------------------------------------ app
def create_app(state: ServerState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        attach = getattr(state.engine, "attach", None)
        if attach is not None:  # the engine process: its messages are read into this loop from now on
            attach(asyncio.get_running_loop())
        yield

    app = FastAPI(title="swiftkit serve", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API over swiftkit's continuous-batching engine.")
    app.state.swiftkit = state
    install_handlers(app)
    app.add_middleware(Gate, state=state)
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
    async def models() -> ModelList:
        cards = [ModelCard(id=served.name, root=str(served.ref.path), max_model_len=served.max_model_len)]
        cards += [ModelCard(id=name, root=str(path), parent=served.name, max_model_len=served.max_model_len)
                  for name, path in served.adapters.items()]
        return ModelList(data=cards)

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard)
    async def model_card(model_id: str) -> ModelCard:
        state.adapter_for(model_id)
        return ModelCard(id=model_id, max_model_len=served.max_model_len)

    def tokenize_ids(body: TokenizeRequest) -> list[int]:
        if body.messages is not None:
            text = served.render_chat(chat_messages(ChatCompletionRequest(model="x", messages=body.messages)),
                                      add_generation_prompt=body.add_generation_prompt)
            return served.encode(text, add_special_tokens=False)
        return served.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)

    @app.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        if body.model:
            state.adapter_for(body.model)
        ids = await state.offload(tokenize_ids, body)
        return TokenizeResponse(count=len(ids), max_model_len=served.max_model_len, tokens=ids)

    @app.post("/detokenize", response_model=DetokenizeResponse)
    async def detokenize(body: DetokenizeRequest) -> DetokenizeResponse:
        if body.model:
            state.adapter_for(body.model)
        if any(not 0 <= t < state.vocab_size for t in body.tokens):
            raise BadRequestError(f"token ids must be in [0, {state.vocab_size})", param="tokens")
        return DetokenizeResponse(prompt=await state.offload(served.tokenizer.decode, body.tokens))

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await chat_handler(state, body, request)

    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request):
        return await completion_handler(state, body, request)

    @app.post("/v1/embeddings", response_model=EmbeddingResponse)
    async def embeddings(body: EmbeddingRequest) -> EmbeddingResponse:
        return await embedding_handler(state, body)

    from swiftkit.serve.responses import install_responses

    install_responses(app, state)
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


# ------------------------------------------------------------------------------ chat
@dataclass
class ChatPlan:
    run: ChoiceRun
    prompt_ids: list[int]
    tools_format: str | None
    forced_tool: str | None  # "" for tool_choice=required, the name for a named choice, None otherwise
    logprobs: bool
    skip_special: bool = True


@dataclass
class PreparedChat:
    prompt_ids: list[int]
    params: list[SamplingParams]
    matchers: list[Any]
    tools_format: str | None
    forced_tool: str | None


async def plan_chat(state: ServerState, body: ChatCompletionRequest, default_max: int | None = None) -> ChatPlan:
    adapter = state.adapter_for(body.model)
    check_limits(body, state.limits)
    prep = await state.offload(_prepare_chat, state, body, default_max)
    run = ChoiceRun(state.engine, prep.prompt_ids, prep.params, adapter, prep.matchers)
    return ChatPlan(run, prep.prompt_ids, prep.tools_format, prep.forced_tool, body.logprobs, body.skip_special_tokens)


def _prepare_chat(state: ServerState, body: ChatCompletionRequest, default_max: int | None) -> PreparedChat:
    """Everything CPU-heavy of a chat request (template, tokens, grammar), on the preparation pool."""
    served = state.served
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
    if tools:
        check_json_size(tools, state.limits, "tools")
    choice = body.tool_choice or ("auto" if tools else "none")
    named = choice.function["name"] if isinstance(choice, NamedToolChoice) else None
    prompt = served.render_chat(chat_messages(body), tools=tools if choice != "none" else None,
                                add_generation_prompt=body.add_generation_prompt, extra=body.chat_template_kwargs)
    check_prompt_chars(prompt, served, "messages")
    prompt_ids = served.encode(prompt, add_special_tokens=False)
    check_prompt(prompt_ids, served.max_model_len, "messages")
    constraint = None
    forced = None
    if choice == "required" or named:
        constraint, forced = ("json_schema", tool_schema(tools, named, body.parallel_tool_calls)), named or ""
    elif body.response_format and body.response_format.type == "json_object":
        constraint = ("json_object", None)
    elif body.response_format and body.response_format.type == "json_schema":
        spec = body.response_format.json_schema
        if spec is None or spec.schema_ is None:
            raise BadRequestError("response_format json_schema needs json_schema.schema", param="response_format")
        check_json_size(spec.schema_, state.limits, "response_format")
        constraint = ("json_schema", strict_objects(spec.schema_))
    max_tokens = body.max_completion_tokens or body.max_tokens
    top = (body.top_logprobs or 0) if body.logprobs else None
    params = [sampling_params(body, len(prompt_ids), served.max_model_len, max_tokens, state.vocab_size,
                              logprobs=top, constraint=constraint, default_max=default_max)
              for _ in range(body.n)]
    check_request_tokens(params, state.limits)
    _spread_seeds(params)
    matchers = [state.grammar.matcher(constraint) if constraint else None for _ in params]
    tools_format = state.tool_format if tools and choice == "auto" and state.tool_format != "none" else None
    return PreparedChat(prompt_ids, params, matchers, tools_format, forced)


def _spread_seeds(params) -> None:
    """n choices from one seed must differ from each other yet be reproducible: seed, seed+1, ..."""
    for i, p in enumerate(params):
        if p.seed is not None:
            p.seed += i


def chat_logprobs(state: ServerState, entries: list[TokenLogprob], skip_special: bool = True) -> ChoiceLogprobs:
    def top(tid: int, lp: float) -> TopLogprob:
        text = state.token_text(tid, skip_special)
        return TopLogprob(token=text, logprob=lp, bytes=list(text.encode()))

    return ChoiceLogprobs(content=[
        TokenLogprobEntry(**top(e.token_id, e.logprob).model_dump(), top_logprobs=[top(t, v) for t, v in e.top])
        for e in entries
    ])


def finish_choice(plan: ChatPlan, c: Choice) -> tuple[str | None, str | None, list, str | None]:
    """(content, reasoning, tool calls, finish reason) of a finished choice."""
    if plan.forced_tool is not None:
        try:
            calls = calls_from_constrained(c.text, plan.forced_tool or None)
        except (ValueError, KeyError, TypeError):  # cut off by max_tokens before the JSON closed
            return c.text, None, [], c.finish_reason
        return None, None, calls, "tool_calls"
    parser = OutputParser(plan.tools_format)
    first = parser.feed(c.text)
    last, calls = parser.finish()
    content = first.content + last.content
    reasoning = first.reasoning + last.reasoning
    reason = "tool_calls" if calls else c.finish_reason
    return (content if content or not calls else None), (reasoning or None), calls, reason


async def chat_handler(state: ServerState, body: ChatCompletionRequest, request: Request):
    plan = await plan_chat(state, body)
    model = body.model
    if body.stream:
        return streaming(chat_stream(state, plan, model, body))
    try:
        choices = await until_disconnect(request, plan.run.run_to_end())
    finally:
        plan.run.close()
    out = []
    for c in choices:
        content, reasoning, calls, reason = finish_choice(plan, c)
        out.append(ChatChoice(
            index=c.index, message=AssistantMessage(content=content, reasoning_content=reasoning, tool_calls=calls or None),
            logprobs=chat_logprobs(state, c.logprobs, plan.skip_special) if plan.logprobs else None,
            finish_reason=reason, stop_reason=c.stop_reason,
        ))
    usage = _usage(plan.prompt_ids, choices)
    _count(state, usage)
    return ChatCompletionResponse(id=new_id("chatcmpl"), model=model, choices=out, usage=usage)


def _usage(prompt_ids: list[int], choices: list[Choice]) -> Usage:
    completion = sum(len(c.token_ids) for c in choices)
    return Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion, total_tokens=len(prompt_ids) + completion)


def _count(state: ServerState, usage: Usage) -> None:
    state.metrics.prompt_tokens.inc(usage.prompt_tokens)
    state.metrics.generation_tokens.inc(usage.completion_tokens)


async def chat_stream(state: ServerState, plan: ChatPlan, model: str, body: ChatCompletionRequest) -> AsyncIterator[str]:
    rid, created = new_id("chatcmpl"), int(time.time())
    started = time.perf_counter()

    # Hot path (one event per token): the constant part of ChatCompletionChunk is serialised once and
    # each event adds only its choice; the field names are those of protocol.ChatChunkChoice.
    head = f'data: {{"id":"{rid}","object":"chat.completion.chunk","created":{created},"model":{json.dumps(model)},"choices":['

    def chunk(index: int, delta: Delta, finish: str | None = None, logprobs=None) -> str:
        choice: dict[str, Any] = {"index": index, "delta": delta.model_dump(exclude_none=True)}
        if logprobs is not None:
            choice["logprobs"] = logprobs.model_dump(exclude_none=True)
        if finish is not None:
            choice["finish_reason"] = finish
        return head + json.dumps(choice) + "]}\n\n"

    parsers = [OutputParser(plan.tools_format) for _ in plan.run.choices]
    try:
        for c in plan.run.choices:
            yield chunk(c.index, Delta(role="assistant", content=""))
        async for piece in _batched(_chat_events(state, plan, parsers, chunk, started), plan.run.has_pending):
            yield piece
        usage = _usage(plan.prompt_ids, plan.run.choices)
        _count(state, usage)
        if body.stream_options and body.stream_options.include_usage:
            yield sse(ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=usage))
        yield "data: [DONE]\n\n"
    finally:
        plan.run.close()


async def _batched(events: AsyncIterator[str], has_pending) -> AsyncIterator[str]:
    """Join the SSE events that are ready at once into one write (still one event per token on the
    wire): when the server lags behind the engine, fewer, larger writes let it catch up."""
    ready: list[str] = []
    async for event in events:
        ready.append(event)
        if not has_pending():
            yield "".join(ready)
            ready = []
    if ready:
        yield "".join(ready)


async def _chat_events(state: ServerState, plan: ChatPlan, parsers, chunk, started: float) -> AsyncIterator[str]:
    first_token = True
    async for c, out in plan.run.events():
        if first_token and out.token_ids:
            state.metrics.ttft.observe(time.perf_counter() - started)
            first_token = False
        lp = chat_logprobs(state, out.logprobs, plan.skip_special) if plan.logprobs and out.logprobs else None
        if plan.forced_tool is not None:
            parsed_content, parsed_reasoning = "", ""
        else:
            parsed = parsers[c.index].feed(out.text)
            parsed_content, parsed_reasoning = parsed.content, parsed.reasoning
        if parsed_content or parsed_reasoning or lp:
            yield chunk(c.index, Delta(content=parsed_content or None, reasoning_content=parsed_reasoning or None), logprobs=lp)
        if not out.finished:
            continue
        if plan.forced_tool is not None:
            content, _, calls, reason = finish_choice(plan, c)
            if calls:
                yield chunk(c.index, Delta(tool_calls=_delta_calls(calls)))
            elif content:
                yield chunk(c.index, Delta(content=content))
        else:
            last, calls = parsers[c.index].finish()
            reason = "tool_calls" if calls else c.finish_reason
            if last.content or last.reasoning:
                yield chunk(c.index, Delta(content=last.content or None, reasoning_content=last.reasoning or None))
            if calls:
                yield chunk(c.index, Delta(tool_calls=_delta_calls(calls)))
        yield chunk(c.index, Delta(), finish=reason)


def _delta_calls(calls) -> list[DeltaToolCall]:
    return [DeltaToolCall(index=i, id=call.id, type="function",
                          function={"name": call.function.name, "arguments": call.function.arguments})
            for i, call in enumerate(calls)]


# ------------------------------------------------------------------------------ completions
def _prompts(state: ServerState, prompt) -> list[list[int]]:
    served = state.served
    if isinstance(prompt, str):
        prompt = [prompt]
    elif all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    if all(isinstance(p, str) for p in prompt):
        for p in prompt:
            check_prompt_chars(p, served, "prompt")
        return [served.encode(p, add_special_tokens=True) for p in prompt]
    return [list(p) for p in prompt]


def _prepare_completion(state: ServerState, body: CompletionRequest) -> tuple[list[list[int]], list[list[SamplingParams]]]:
    """Tokens and sampling params of every prompt (on the preparation pool: prompts can be large)."""
    served = state.served
    prompts = _prompts(state, body.prompt)
    want_lp = body.logprobs
    all_params = []
    for ids in prompts:
        if any(not 0 <= t < state.vocab_size for t in ids):
            raise BadRequestError(f"prompt token ids must be in [0, {state.vocab_size})", param="prompt")
        check_prompt(ids, served.max_model_len, "prompt")
        params = [sampling_params(body, len(ids), served.max_model_len, body.max_tokens, state.vocab_size,
                                  logprobs=want_lp, prompt_logprobs=want_lp if body.echo else None, default_max=16)
                  for _ in range(body.n)]
        _spread_seeds(params)
        all_params.append(params)
    check_request_tokens([p for params in all_params for p in params], state.limits)
    return prompts, all_params


async def completion_handler(state: ServerState, body: CompletionRequest, request: Request):
    served = state.served
    adapter = state.adapter_for(body.model)
    if body.suffix:
        raise BadRequestError("suffix is not supported", param="suffix")
    check_limits(body, state.limits)
    prompts, all_params = await state.offload(_prepare_completion, state, body)
    runs: list[ChoiceRun] = []
    want_lp = body.logprobs
    try:
        for ids, params in zip(prompts, all_params, strict=True):
            runs.append(ChoiceRun(state.engine, ids, params, adapter, [None] * body.n))
    except Exception:
        for r in runs:
            r.close()
        raise
    if body.stream:
        return streaming(completion_stream(state, body, prompts, runs))
    try:
        results = [await until_disconnect(request, r.run_to_end()) for r in runs]
    finally:
        for r in runs:
            r.close()
    choices = []
    for p, (ids, cs) in enumerate(zip(prompts, results, strict=True)):
        for c in cs:
            text, lp = c.text, None
            if want_lp is not None:
                lp = _completion_logprobs(state, c.logprobs, ids if body.echo else None, c.prompt_logprobs,
                                          skip_special=body.skip_special_tokens)
            if body.echo:
                text = served.tokenizer.decode(ids) + text
            choices.append(CompletionChoice(index=p * body.n + c.index, text=text, logprobs=lp,
                                            finish_reason=c.finish_reason, stop_reason=c.stop_reason))
    usage = Usage()
    for ids, cs in zip(prompts, results, strict=True):
        u = _usage(ids, cs)
        usage.prompt_tokens += u.prompt_tokens
        usage.completion_tokens += u.completion_tokens
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    _count(state, usage)
    return CompletionResponse(id=new_id("cmpl"), model=body.model, choices=choices, usage=usage)


def _completion_logprobs(state: ServerState, entries: list[TokenLogprob], prompt_ids: list[int] | None,
                         prompt_lp: list[TokenLogprob | None] | None, offset: int = 0,
                         skip_special: bool = True) -> CompletionLogprobs:
    out = CompletionLogprobs()
    pos = offset
    # echoed prompt tokens are shown as the echoed text shows them (special tokens included)
    items: list[tuple[int, TokenLogprob | None, bool]] = []
    if prompt_ids is not None:
        items += [(tid, (prompt_lp or [None] * len(prompt_ids))[i], False) for i, tid in enumerate(prompt_ids)]
    items += [(e.token_id, e, skip_special) for e in entries]
    for tid, e, skip in items:
        text = state.token_text(tid, skip)
        out.tokens.append(text)
        out.text_offset.append(pos)
        pos += len(text)
        out.token_logprobs.append(e.logprob if e else None)
        out.top_logprobs.append({state.token_text(t): v for t, v in e.top} if e and e.top else (None if e is None else {}))
    return out


async def completion_stream(state: ServerState, body: CompletionRequest, prompts, runs) -> AsyncIterator[str]:
    rid, created = new_id("cmpl"), int(time.time())

    head = f'data: {{"id":"{rid}","object":"text_completion","created":{created},"model":{json.dumps(body.model)},"choices":['

    def chunk(index: int, text: str, finish: str | None = None, logprobs=None, stop_reason=None) -> str:
        choice: dict[str, Any] = {"index": index, "text": text}  # fields of protocol.CompletionChoice
        if logprobs is not None:
            choice["logprobs"] = logprobs.model_dump()
        if finish is not None:
            choice["finish_reason"] = finish
        if stop_reason is not None:
            choice["stop_reason"] = stop_reason
        return head + json.dumps(choice) + "]}\n\n"

    async def events() -> AsyncIterator[str]:
        offsets: dict[int, int] = {}
        for p, (ids, run) in enumerate(zip(prompts, runs, strict=True)):
            async for c, out in run.events():
                index = p * body.n + c.index
                text = out.text
                lp = None
                if index not in offsets:
                    offsets[index] = 0
                    if body.echo:
                        text = state.served.tokenizer.decode(ids) + text
                if body.logprobs is not None and (out.logprobs or out.prompt_logprobs):
                    echo_ids = ids if body.echo and out.prompt_logprobs is not None else None
                    lp = _completion_logprobs(state, out.logprobs or [], echo_ids, out.prompt_logprobs, offsets[index],
                                              skip_special=body.skip_special_tokens)
                offsets[index] += len(text)
                if text or lp:
                    yield chunk(index, text, logprobs=lp)
                if out.finished:
                    yield chunk(index, "", finish=out.finish_reason, stop_reason=out.stop_reason)

    try:
        async for piece in _batched(events(), lambda: any(r.has_pending() for r in runs)):
            yield piece
        usage = Usage()
        for ids, run in zip(prompts, runs, strict=True):
            u = _usage(ids, run.choices)
            usage.prompt_tokens += u.prompt_tokens
            usage.completion_tokens += u.completion_tokens
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        _count(state, usage)
        if body.stream_options and body.stream_options.include_usage:
            yield sse(CompletionResponse(id=rid, created=created, model=body.model, choices=[], usage=usage))
        yield "data: [DONE]\n\n"
    finally:
        for r in runs:
            r.close()


# ------------------------------------------------------------------------------ embeddings
MAX_EMBEDDING_INPUTS = 2048
async def embedding_handler(state: ServerState, body: EmbeddingRequest) -> EmbeddingResponse:
    import numpy as np

    if body.model not in state.model_names() and body.model != state.served.ref.ref and body.model != getattr(state.embedder, "name", None):
        raise ModelNotFound(f"the model `{body.model}` does not exist", param="model", code="model_not_found")
    batches = await state.offload(_embedding_batches, state, body.input)
    vectors = []
    # Embeddings run on the engine thread between decode steps: in chunks of at most --max-batched-tokens
    # padded tokens, so a big request delays running streams by one chunk at a time, never by all of it.
    for chunk in _chunks(batches, state.limits.max_batched_tokens):
        vectors += await state.engine.embed(chunk)
    data = []
    for i, vec in enumerate(vectors):
        if body.dimensions:
            if body.dimensions > len(vec):
                raise BadRequestError(f"dimensions must be at most {len(vec)} for this model", param="dimensions")
            # shortened as OpenAI does: the first `dimensions` values, normalised again
            vec = vec[: body.dimensions]
            norm = float(np.linalg.norm(vec)) or 1.0
            vec = [v / norm for v in vec]
        emb: list[float] | str = vec
        if body.encoding_format == "base64":
            emb = base64.b64encode(np.asarray(vec, dtype=np.float32).tobytes()).decode()
        data.append(EmbeddingData(index=i, embedding=emb))
    n = sum(len(b) for b in batches)
    return EmbeddingResponse(data=data, model=body.model, usage=Usage(prompt_tokens=n, total_tokens=n))


def _chunks(batches: list[list[int]], budget: int) -> list[list[list[int]]]:
    chunks: list[list[list[int]]] = [[]]
    width = 0
    for ids in batches:
        width = max(width, len(ids))
        if chunks[-1] and width * (len(chunks[-1]) + 1) > budget:
            chunks.append([])
            width = len(ids)
        chunks[-1].append(ids)
    return chunks


def _embedding_batches(state: ServerState, inputs) -> list[list[int]]:
    """Token ids of each input, checked against the embedding model's vocabulary and length."""
    embedder = state.embedder
    tok = embedder.tokenizer
    if isinstance(inputs, str):
        batches = [tok(inputs)["input_ids"]]
    elif inputs and all(isinstance(x, int) for x in inputs):
        batches = [list(inputs)]
    elif all(isinstance(x, str) for x in inputs):
        batches = [tok(x)["input_ids"] for x in inputs]
    else:
        batches = [list(x) for x in inputs]
    if not batches or any(not b for b in batches):
        raise BadRequestError("input must not be empty", param="input")
    if len(batches) > MAX_EMBEDDING_INPUTS:
        raise BadRequestError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request (as OpenAI), got {len(batches)}",
                              param="input")
    vocab = state.vocab_size if embedder.name == state.served.name else len(tok)
    if any(not 0 <= t < vocab for b in batches for t in b):
        raise BadRequestError(f"input token ids must be in [0, {vocab})", param="input")
    if any(len(b) > embedder.max_len for b in batches):
        raise BadRequestError(f"an input is longer than the embedding model's {embedder.max_len} tokens", param="input")
    return batches
