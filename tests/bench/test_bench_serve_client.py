"""`swiftkit bench serve`'s client against servers that stream differently (the real server is in
tests/serve/test_cli_tools.py): tokens come from the usage chunk, or from the content chunks when a server
sends no usage (llama-cpp-python's server), so its tok/s is not reported as 0."""

from __future__ import annotations

import asyncio
import json

import httpx

from swiftkit.bench.config import BenchServeConfig
from swiftkit.bench.serve import one_request


def stream_of(pieces: list[str], usage: int | None) -> httpx.MockTransport:
    chunks = [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    if usage is not None:
        chunks.append({"choices": [], "usage": {"completion_tokens": usage}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.MockTransport(lambda request: httpx.Response(200, text=body,
                                                              headers={"content-type": "text/event-stream"}))


def sample_from(transport: httpx.MockTransport):
    async def go():
        async with httpx.AsyncClient(base_url="http://server/v1", transport=transport) as client:
            return await one_request(client, BenchServeConfig(max_tokens=8), "m", "hi")

    return asyncio.run(go())


def test_tokens_come_from_usage_when_the_server_sends_it():
    sample = sample_from(stream_of(["a", "b", "c"], usage=5))  # a chunk may hold several tokens
    assert sample.tokens == 5
    assert len(sample.itls) == 2


def test_tokens_are_the_content_chunks_when_the_server_sends_no_usage():
    sample = sample_from(stream_of(["a", "b", "c", "d"], usage=None))
    assert sample.tokens == 4
    assert sample.ttft == sample.ttft  # measured (not NaN)
