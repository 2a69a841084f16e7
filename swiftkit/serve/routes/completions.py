"""/v1/completions: raw prompts (strings or token ids, no chat template), echo, logprobs, streaming."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

from swiftkit.serve.engine.request import SamplingParams, TokenLogprob
from swiftkit.serve.errors import BadRequest
from swiftkit.serve.generation import (
    ChoiceRun,
    check_limits,
    check_prompt,
    check_prompt_chars,
    check_request_tokens,
    count_usage,
    sampling_params,
    spread_seeds,
    until_disconnect,
    usage_of,
)
from swiftkit.serve.protocol import CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Usage, new_id
from swiftkit.serve.sse import batched, sse, streaming
from swiftkit.serve.state import ServerState


def install(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request):
        return await completion_handler(state, body, request)


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
            raise BadRequest(f"prompt token ids must be in [0, {state.vocab_size})", param="prompt")
        check_prompt(ids, served.max_model_len, "prompt")
        params = [sampling_params(body, len(ids), served.max_model_len, body.max_tokens, state.vocab_size,
                                  logprobs=want_lp, prompt_logprobs=want_lp if body.echo else None, default_max=16)
                  for _ in range(body.n)]
        spread_seeds(params)
        all_params.append(params)
    check_request_tokens([p for params in all_params for p in params], state.limits)
    return prompts, all_params


async def completion_handler(state: ServerState, body: CompletionRequest, request: Request):
    served = state.served
    state.adapter_for(body.model)  # an unknown model fails before any work
    if body.suffix:
        raise BadRequest("suffix is not supported", param="suffix")
    check_limits(body, state.limits)
    prompts, all_params = await state.offload(_prepare_completion, state, body)
    adapter = state.adapter_for(body.model)  # again: an adapter may have been unloaded meanwhile (serve/adapters.py)
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
        u = usage_of(ids, cs)
        usage.prompt_tokens += u.prompt_tokens
        usage.completion_tokens += u.completion_tokens
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    count_usage(state, usage)
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
        async for piece in batched(events(), lambda: any(r.has_pending() for r in runs)):
            yield piece
        usage = Usage()
        for ids, run in zip(prompts, runs, strict=True):
            u = usage_of(ids, run.choices)
            usage.prompt_tokens += u.prompt_tokens
            usage.completion_tokens += u.completion_tokens
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        count_usage(state, usage)
        if body.stream_options and body.stream_options.include_usage:
            yield sse(CompletionResponse(id=rid, created=created, model=body.model, choices=[], usage=usage))
        yield "data: [DONE]\n\n"
    finally:
        for r in runs:
            r.close()


