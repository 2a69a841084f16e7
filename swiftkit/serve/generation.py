"""Request planning, shared by every generating route: from a validated request to engine requests and back.

Prompts, sampling params, the chat plan (template, tokens, grammar, tool format), choices and usage live
here, so /v1/chat/completions, /v1/completions and /v1/responses agree on every detail (limits, errors,
logprobs, usage). `ChoiceRun` drives the n engine streams of one request and yields per-choice events
in generation order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from swiftkit.serve.constrained import strict_objects, tool_schema
from swiftkit.serve.engine.request import RequestOutput, SamplingParams, TokenLogprob
from swiftkit.serve.errors import BadRequest, ClientGone, Overloaded
from swiftkit.serve.protocol import ChatCompletionRequest, NamedToolChoice, SamplingFields, Usage
from swiftkit.serve.tools import OutputParser, calls_from_constrained
from swiftkit.serve.usage import first_token, record_tokens


@dataclass
class Choice:
    """Accumulated result of one choice."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None


def check_prompt_chars(text: str, served, param: str) -> None:
    if len(text) > served.max_prompt_chars:
        raise BadRequest(
            f"the prompt is {len(text)} characters; this model's context of {served.max_model_len} tokens holds "
            f"no more than {served.max_prompt_chars}", param=param, code="context_length_exceeded",
        )


def check_prompt(prompt_ids: list[int], max_model_len: int, param: str) -> None:
    if not prompt_ids:
        raise BadRequest("the prompt is empty", param=param)
    if len(prompt_ids) >= max_model_len:
        raise BadRequest(
            f"the prompt is {len(prompt_ids)} tokens, but this model's context is {max_model_len} tokens "
            "(prompt plus at least one generated token)", param=param, code="context_length_exceeded",
        )


def check_limits(body: SamplingFields, limits) -> None:
    """The size limits of `swiftkit serve`'s flags (`limits`: its ServeConfig) that one request's fields must meet."""
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > limits.max_stop:
        raise BadRequest(f"at most {limits.max_stop} stop sequences (--max-stop), got {len(stop)}", param="stop")
    if any(len(s) > limits.max_stop_chars for s in stop):
        raise BadRequest(f"a stop sequence is longer than {limits.max_stop_chars} characters (--max-stop-chars)",
                         param="stop")
    if body.logit_bias and len(body.logit_bias) > limits.max_logit_bias:
        raise BadRequest(f"at most {limits.max_logit_bias} logit_bias entries (--max-logit-bias), "
                         f"got {len(body.logit_bias)}", param="logit_bias")


def check_json_size(value: Any, limits, param: str) -> None:
    """Schemas and tool lists are compiled into grammars and rendered into prompts: bound their size."""
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > limits.max_schema_bytes:
        raise BadRequest(f"{param} is {size} bytes of JSON, more than {limits.max_schema_bytes} (--max-schema-bytes)",
                         param=param)


def check_request_tokens(params: list[SamplingParams], limits) -> None:
    total = sum(p.max_tokens for p in params)
    if total > limits.max_request_tokens:
        raise BadRequest(f"this request asks for up to {total} tokens (n x max_tokens, over all prompts), more than "
                         f"{limits.max_request_tokens} (--max-request-tokens); lower max_tokens or n", param="max_tokens")


def sampling_params(body: SamplingFields, prompt_len: int, max_model_len: int, max_tokens: int | None,
                    vocab_size: int, logprobs: int | None = None, prompt_logprobs: int | None = None,
                    constraint: tuple[str, Any] | None = None, default_max: int | None = None) -> SamplingParams:
    room = max_model_len - prompt_len
    if max_tokens is None:
        max_tokens = min(room, default_max) if default_max else room
    elif max_tokens > room:
        raise BadRequest(
            f"max_tokens ({max_tokens}) plus the prompt ({prompt_len} tokens) exceeds the context of "
            f"{max_model_len} tokens", param="max_tokens", code="context_length_exceeded",
        )
    bias = {int(k): v for k, v in (body.logit_bias or {}).items()}
    if any(not 0 <= k < vocab_size for k in bias):
        raise BadRequest(f"logit_bias token ids must be in [0, {vocab_size})", param="logit_bias")
    if any(not 0 <= t < vocab_size for t in body.stop_token_ids or []):
        raise BadRequest(f"stop_token_ids must be in [0, {vocab_size})", param="stop_token_ids")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0, min_p=body.min_p or 0.0, seed=body.seed,
        presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty or 1.0, logit_bias=bias,
        min_tokens=body.min_tokens, ignore_eos=body.ignore_eos, stop=stop,
        stop_token_ids=list(body.stop_token_ids or []), logprobs=logprobs, prompt_logprobs=prompt_logprobs,
        skip_special_tokens=body.skip_special_tokens, constraint=constraint,
    )


def chat_messages(body: ChatCompletionRequest) -> list[dict]:
    """Messages as chat templates expect them (text parts joined, tool calls with JSON arguments)."""
    out = []
    for m in body.messages:
        msg: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.tool_calls:
            msg["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                 for c in m.tool_calls]
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out


class ChoiceRun:
    """The n engine streams of one request, opened at once (so 429 happens before any response)."""

    def __init__(self, engine, prompt_ids: list[int], params: list[SamplingParams], adapter: str | None,
                 matchers: list[Any]):
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.choices = [Choice(i) for i in range(len(params))]
        self._recorded = False
        self.streams = []
        self._merged: asyncio.Queue | None = None
        self._started = False
        try:
            for p, m in zip(params, matchers, strict=True):
                self.streams.append(engine.open(prompt_ids, p, adapter, m))
        except engine.Busy as exc:
            self._recorded = True  # refused before it ran: nothing to bill
            self.close()
            raise Overloaded(str(exc), code="queue_full") from None

    async def events(self) -> AsyncIterator[tuple[Choice, RequestOutput]]:
        """(choice, delta) pairs as each stream produces them; the choice is already updated."""
        if len(self.streams) == 1:
            async for out in self.streams[0]:
                yield self._update(0, out), out
            return
        merged: asyncio.Queue = asyncio.Queue()
        self._merged = merged

        async def pump(i: int, stream) -> None:
            try:
                async for out in stream:
                    await merged.put((i, out))
            except Exception as exc:  # e.g. the engine died: the request fails as a whole, not hangs
                await merged.put((i, exc))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(self.streams)]
        try:
            pending = len(tasks)
            while pending:
                i, out = await merged.get()
                if isinstance(out, Exception):
                    raise out
                if out.finished:
                    pending -= 1
                yield self._update(i, out), out
        finally:
            for t in tasks:
                t.cancel()

    def has_pending(self) -> bool:
        """More outputs are already waiting (a streaming handler can write them in one go)."""
        if self._merged is not None:
            return not self._merged.empty()
        return len(self.streams) == 1 and self.streams[0].pending()

    def _update(self, i: int, out: RequestOutput) -> Choice:
        c = self.choices[i]
        if not self._started and out.token_ids:
            self._started = True
            first_token()
        c.token_ids += out.token_ids
        c.text += out.text
        if out.logprobs:
            c.logprobs += out.logprobs
        if out.prompt_logprobs is not None:
            c.prompt_logprobs = out.prompt_logprobs
        if out.finished:
            c.finish_reason, c.stop_reason = out.finish_reason, out.stop_reason
        return c

    async def run_to_end(self) -> list[Choice]:
        async for _ in self.events():
            pass
        return self.choices

    def close(self) -> None:
        """Free the engine slots; the tokens used so far go into the request's usage row, once, however
        the run ended (finished, client gone, engine dead), so they equal the `usage` of a finished response."""
        for s in self.streams:
            with contextlib.suppress(Exception):
                s.close()
        if not self._recorded:
            self._recorded = True
            record_tokens(len(self.prompt_ids), sum(len(c.token_ids) for c in self.choices), [c.text for c in self.choices])


async def until_disconnect(request, coro):
    """Await `coro`, cancelling it if the HTTP client goes away (frees the engine slots at once)."""
    task = asyncio.ensure_future(coro)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ClientGone("the client disconnected")
    finally:
        if not task.done():
            task.cancel()


# ------------------------------------------------------------------------------ chat plan
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


async def plan_chat(state, body: ChatCompletionRequest, default_max: int | None = None) -> ChatPlan:
    state.adapter_for(body.model)  # an unknown model fails before any work
    check_limits(body, state.limits)
    prep = await state.offload(prepare_chat, state, body, default_max)
    adapter = state.adapter_for(body.model)  # again: an adapter may have been unloaded meanwhile (serve/adapters.py)
    run = ChoiceRun(state.engine, prep.prompt_ids, prep.params, adapter, prep.matchers)
    return ChatPlan(run, prep.prompt_ids, prep.tools_format, prep.forced_tool, body.logprobs, body.skip_special_tokens)


def prepare_chat(state, body: ChatCompletionRequest, default_max: int | None) -> PreparedChat:
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
            raise BadRequest("response_format json_schema needs json_schema.schema", param="response_format")
        check_json_size(spec.schema_, state.limits, "response_format")
        constraint = ("json_schema", strict_objects(spec.schema_))
    max_tokens = body.max_completion_tokens or body.max_tokens
    top = (body.top_logprobs or 0) if body.logprobs else None
    params = [sampling_params(body, len(prompt_ids), served.max_model_len, max_tokens, state.vocab_size,
                              logprobs=top, constraint=constraint, default_max=default_max)
              for _ in range(body.n)]
    check_request_tokens(params, state.limits)
    spread_seeds(params)
    matchers = [state.grammar.matcher(constraint) if constraint else None for _ in params]
    tools_format = state.tool_format if tools and choice == "auto" and state.tool_format != "none" else None
    return PreparedChat(prompt_ids, params, matchers, tools_format, forced)


def spread_seeds(params) -> None:
    """n choices from one seed must differ from each other yet be reproducible: seed, seed+1, ..."""
    for i, p in enumerate(params):
        if p.seed is not None:
            p.seed += i


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


def usage_of(prompt_ids: list[int], choices: list[Choice]) -> Usage:
    completion = sum(len(c.token_ids) for c in choices)
    return Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion, total_tokens=len(prompt_ids) + completion)


def count_usage(state, usage: Usage) -> None:
    state.metrics.prompt_tokens.inc(usage.prompt_tokens)
    state.metrics.generation_tokens.inc(usage.completion_tokens)
