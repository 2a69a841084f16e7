"""/v1/chat/completions: messages through the chat template, streaming deltas, tool calls, logprobs."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

from swiftkit.serve.engine.request import TokenLogprob
from swiftkit.serve.generation import ChatPlan, count_usage, finish_choice, plan_chat, until_disconnect, usage_of
from swiftkit.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    Delta,
    DeltaToolCall,
    TokenLogprobEntry,
    TopLogprob,
    new_id,
)
from swiftkit.serve.sse import batched, sse, streaming
from swiftkit.serve.state import ServerState
from swiftkit.serve.tools import OutputParser


def install(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await chat_handler(state, body, request)


def chat_logprobs(state: ServerState, entries: list[TokenLogprob], skip_special: bool = True) -> ChoiceLogprobs:
    def top(tid: int, lp: float) -> TopLogprob:
        text = state.token_text(tid, skip_special)
        return TopLogprob(token=text, logprob=lp, bytes=list(text.encode()))

    return ChoiceLogprobs(content=[
        TokenLogprobEntry(**top(e.token_id, e.logprob).model_dump(), top_logprobs=[top(t, v) for t, v in e.top])
        for e in entries
    ])


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
    usage = usage_of(plan.prompt_ids, choices)
    count_usage(state, usage)
    return ChatCompletionResponse(id=new_id("chatcmpl"), model=model, choices=out, usage=usage)


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
        async for piece in batched(_chat_events(state, plan, parsers, chunk, started), plan.run.has_pending):
            yield piece
        usage = usage_of(plan.prompt_ids, plan.run.choices)
        count_usage(state, usage)
        if body.stream_options and body.stream_options.include_usage:
            yield sse(ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=usage))
        yield "data: [DONE]\n\n"
    finally:
        plan.run.close()


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


