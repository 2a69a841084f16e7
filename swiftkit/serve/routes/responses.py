"""/v1/responses, the OpenAI SDK's newer API: text in/out, streaming events, function tools.

Implemented on the chat path (same prompt rendering, engine, tool parsing); only the envelope
differs. Covers what the official SDK's basic examples use, not stored responses or built-in tools.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

from swiftkit.serve.errors import BadRequest
from swiftkit.serve.generation import finish_choice, plan_chat, until_disconnect
from swiftkit.serve.protocol import ChatCompletionRequest, ResponsesRequest, new_id
from swiftkit.serve.sse import streaming
from swiftkit.serve.state import ServerState
from swiftkit.serve.tools import OutputParser


def to_chat(body: ResponsesRequest) -> ChatCompletionRequest:
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        messages.append({"role": "user", "content": body.input})
    else:
        for i, item in enumerate(body.input):
            kind = item.get("type", "message")
            if kind == "message" or ("role" in item and kind not in ("function_call", "function_call_output")):
                content = item.get("content", "")
                if isinstance(content, list):
                    if not all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in content):
                        raise BadRequest("content parts are objects with a `text` string", param=f"input.{i}.content")
                    content = "".join(p.get("text", "") for p in content)
                messages.append({"role": item.get("role", "user"), "content": content})
            elif kind == "function_call":
                name, arguments = item.get("name"), item.get("arguments", "{}")
                if not isinstance(name, str) or not name:
                    raise BadRequest("a function_call item needs a `name` string", param=f"input.{i}.name")
                if not isinstance(arguments, str):
                    raise BadRequest("a function_call item's `arguments` is a JSON string", param=f"input.{i}.arguments")
                messages.append({"role": "assistant", "content": "", "tool_calls": [
                    {"id": item.get("call_id", new_id("call")), "type": "function",
                     "function": {"name": name, "arguments": arguments}}]})
            elif kind == "function_call_output":
                messages.append({"role": "tool", "content": str(item.get("output", "")), "tool_call_id": item.get("call_id")})
            else:
                raise BadRequest(f"input items of type {kind!r} are not supported", param="input")
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
             for t in body.tools or []]
    choice = body.tool_choice
    if isinstance(choice, dict):
        choice = {"type": "function", "function": {"name": choice.get("name", "")}}
    return ChatCompletionRequest.model_validate({
        "model": body.model, "messages": messages, "max_tokens": body.max_output_tokens,
        "temperature": body.temperature, "top_p": body.top_p, "seed": body.seed,
        "tools": tools or None, "tool_choice": choice, "parallel_tool_calls": body.parallel_tool_calls,
    })


def _response(rid: str, body: ResponsesRequest, output: list[dict], usage: dict | None, status: str) -> dict:
    return {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": status, "model": body.model,
        "output": output, "usage": usage, "error": None, "incomplete_details": None,
        "instructions": body.instructions, "metadata": body.metadata or {}, "parallel_tool_calls": body.parallel_tool_calls,
        "temperature": body.temperature, "top_p": body.top_p, "tool_choice": body.tool_choice or "auto",
        "tools": [t.model_dump(exclude_none=True) for t in body.tools or []], "max_output_tokens": body.max_output_tokens,
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}


def _call_items(calls) -> list[dict]:
    return [{"type": "function_call", "id": new_id("fc"), "call_id": c.id, "name": c.function.name,
             "arguments": c.function.arguments, "status": "completed"} for c in calls]


def install(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/responses")
    async def responses(body: ResponsesRequest, request: Request):
        plan = await plan_chat(state, to_chat(body))
        rid = new_id("resp")
        if body.stream:
            return streaming(_stream(state, plan, body, rid))
        try:
            (choice,) = await until_disconnect(request, plan.run.run_to_end())
        finally:
            plan.run.close()
        content, _, calls, _ = finish_choice(plan, choice)
        output = _call_items(calls)
        if content or not calls:
            output.insert(0, _message_item(new_id("msg"), content or ""))
        usage = _usage(plan, choice)
        return _response(rid, body, output, usage, "completed")

    def _usage(plan, choice) -> dict:
        n_in, n_out = len(plan.prompt_ids), len(choice.token_ids)
        return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out,
                "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}

    async def _stream(state, plan, body: ResponsesRequest, rid: str) -> AsyncIterator[str]:
        seq = 0

        def event(kind: str, **payload) -> str:
            nonlocal seq
            seq += 1
            return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **payload})}\n\n"

        msg_id = new_id("msg")
        parser = OutputParser(plan.tools_format)
        text = ""
        try:
            yield event("response.created", response=_response(rid, body, [], None, "in_progress"))
            yield event("response.in_progress", response=_response(rid, body, [], None, "in_progress"))
            yield event("response.output_item.added", output_index=0, item=_message_item(msg_id, "", "in_progress"))
            yield event("response.content_part.added", item_id=msg_id, output_index=0, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []})
            async for _, out in plan.run.events():
                delta = parser.feed(out.text).content if plan.forced_tool is None else ""
                if delta:
                    text += delta
                    yield event("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0, delta=delta)
            calls = []
            choice = plan.run.choices[0]
            if plan.forced_tool is None:
                last, calls = parser.finish()
                if last.content:
                    text += last.content
                    yield event("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0,
                                delta=last.content)
            else:
                _, _, calls, _ = finish_choice(plan, choice)
            yield event("response.output_text.done", item_id=msg_id, output_index=0, content_index=0, text=text)
            part = {"type": "output_text", "text": text, "annotations": []}
            yield event("response.content_part.done", item_id=msg_id, output_index=0, content_index=0, part=part)
            yield event("response.output_item.done", output_index=0, item=_message_item(msg_id, text))
            output = [_message_item(msg_id, text)]
            for i, item in enumerate(_call_items(calls), start=1):
                yield event("response.output_item.added", output_index=i, item={**item, "status": "in_progress"})
                yield event("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                            arguments=item["arguments"])
                yield event("response.output_item.done", output_index=i, item=item)
                output.append(item)
            yield event("response.completed", response=_response(rid, body, output, _usage(plan, choice), "completed"))
        finally:
            plan.run.close()
