"""The OpenAI protocol end to end: official SDK (sync, async, streaming) and raw HTTP for wire details."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.serve.conftest import API_KEY

MARKERS = {"<tool_call>", "</tool_call>", "<think>", "</think>"}
QUESTION = [{"role": "user", "content": "What is 12 + 34?"}]


def chat_ids(http: httpx.Client, messages: list[dict]) -> list[int]:
    r = http.post("/tokenize", json={"model": "toy", "messages": messages})
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def visible_text(tok, ids: list[int]) -> str:
    """What the server shows for these ids: special tokens hidden, except tool/think markers."""
    hidden = set(tok.all_special_ids) - {tok.convert_tokens_to_ids(m) for m in MARKERS}
    return tok.decode([i for i in ids if i not in hidden])


def test_models_lists_base_and_adapters(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["toy", "alpha", "beta"]


def test_chat_usage_is_exact_and_length_finish(client, http):
    r = client.chat.completions.create(model="toy", messages=QUESTION, max_tokens=5, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert r.object == "chat.completion"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(chat_ids(http, QUESTION))
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 5


def test_stream_wire_format(http):
    body = {"model": "toy", "messages": QUESTION, "max_tokens": 6, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}, "logprobs": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 6
    body_chunks = [c for c in chunks[1:-1]]
    assert body_chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0].get("finish_reason") is None for c in body_chunks[:-1])
    # one chunk per generated token, as it is produced
    per_token = [c for c in body_chunks if c["choices"][0].get("logprobs")]
    assert len(per_token) == 6 and all(len(c["choices"][0]["logprobs"]["content"]) == 1 for c in per_token)


def test_concurrent_streams_match_sequential_and_batch(server, reference):
    """16 distinct prompts streamed at once: no cross-talk (greedy = in-process), engine batched >= 8."""
    tok = reference.tokenizer
    prompts = [f"{10 + 3 * i} + {20 + 5 * i} =" for i in range(16)]

    async def one(client: AsyncOpenAI, prompt: str) -> str:
        stream = await client.completions.create(model="toy", prompt=prompt, max_tokens=24, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True})
        return "".join([c.choices[0].text async for c in stream if c.choices])

    async def run_all() -> list[str]:
        async with AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
            return await asyncio.gather(*(one(client, p) for p in prompts))

    texts = asyncio.run(run_all())
    for prompt, text in zip(prompts, texts, strict=True):
        ids = tok(prompt)["input_ids"]
        assert text == visible_text(tok, reference(ids, 24)), prompt
    assert server.metric("swiftkit_batch_size_max") >= 8


def pick_stop(text: str) -> str:
    """A 2-character stop string from the middle of `text` (whatever the toy happens to generate)."""
    for i in range(1, len(text) - 1):
        if text[i:i + 2].strip() and text.index(text[i:i + 2]) == i:
            return text[i:i + 2]
    raise AssertionError(f"output too short to pick a stop string: {text!r}")


def test_stop_string_is_excluded(client):
    kw = dict(model="toy", prompt="12 + 34 =", max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    base = client.completions.create(**kw).choices[0].text
    stop = pick_stop(base)
    choice = client.completions.create(**kw, stop=[stop, "never-appears"]).choices[0]
    assert choice.finish_reason == "stop"
    assert choice.text == base[: base.index(stop)]


def test_stop_string_excluded_when_streaming(http):
    body = {"model": "toy", "prompt": "56 + 7 =", "max_tokens": 24, "temperature": 0, "ignore_eos": True}
    base = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    stop = pick_stop(base)
    with http.stream("POST", "/v1/completions", json={**body, "stop": stop, "stream": True}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == base[: base.index(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def tokens_of(choice) -> list[str]:
    return [t.token for t in choice.logprobs.content]


def test_seed_reproducible_and_n(client):
    kw = dict(model="toy", prompt="the", max_tokens=12, temperature=1.0, seed=123, n=3, logprobs=0,
              extra_body={"ignore_eos": True, "skip_special_tokens": False})
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.logprobs.tokens for c in a.choices] == [c.logprobs.tokens for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert len({tuple(c.logprobs.tokens) for c in a.choices}) > 1
    assert a.usage.completion_tokens == 36


def test_stream_with_n(client):
    stream = client.chat.completions.create(model="toy", messages=QUESTION, max_tokens=4, temperature=1, n=2,
                                            stream=True, extra_body={"ignore_eos": True})
    finished = {}
    for chunk in stream:
        for ch in chunk.choices:
            if ch.finish_reason:
                finished[ch.index] = ch.finish_reason
    assert finished == {0: "length", 1: "length"}


def test_logprobs(client):
    r = client.chat.completions.create(model="toy", messages=QUESTION, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob <= 0
        # greedy: the chosen token is the most likely one
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)


def test_logit_bias_min_tokens_and_stop_token_ids(client, reference):
    tok = reference.tokenizer
    seven = tok.convert_tokens_to_ids("7")
    r = client.completions.create(model="toy", prompt="1 + 1 =", max_tokens=5, temperature=0,
                                  logit_bias={str(seven): 100})
    assert r.choices[0].text == "77777"
    # stop_token_ids ends at the token (not shown); min_tokens forbids stopping before it
    r = client.completions.create(model="toy", prompt="1 + 1 =", max_tokens=8, temperature=0,
                                  logit_bias={str(seven): 100}, extra_body={"stop_token_ids": [seven]})
    assert r.choices[0].finish_reason == "stop" and r.choices[0].text == ""
    assert r.usage.completion_tokens == 1


def test_penalties_reach_the_sampler(client):
    """Exact penalty arithmetic is in test_sampler.py; here: the fields travel and change greedy output."""
    def tokens(**extra) -> list[str]:
        return client.completions.create(model="toy", prompt="the", max_tokens=24, temperature=0, logprobs=0,
                                         extra_body={"ignore_eos": True, **extra}).choices[0].logprobs.tokens

    plain = tokens()
    assert tokens(frequency_penalty=2.0) != plain
    assert tokens(repetition_penalty=5.0) != plain
    assert tokens(presence_penalty=2.0, frequency_penalty=1.0) != tokens(frequency_penalty=1.0)


def test_top_k_one_is_greedy(client):
    greedy = client.completions.create(model="toy", prompt="3 + 4 =", max_tokens=8, temperature=0,
                                       extra_body={"ignore_eos": True}).choices[0].text
    sampled = client.completions.create(model="toy", prompt="3 + 4 =", max_tokens=8, temperature=1.5, seed=5,
                                        extra_body={"ignore_eos": True, "top_k": 1}).choices[0].text
    assert sampled == greedy


def test_completions_prompt_list_echo_and_logprobs(client, http):
    prompts = ["12 + 34 =", "5 + 6 ="]
    r = client.completions.create(model="toy", prompt=prompts, max_tokens=3, temperature=0, echo=True, logprobs=1,
                                  extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1]
    n_prompt = 0
    for prompt, choice in zip(prompts, r.choices, strict=True):
        assert choice.text.startswith(prompt)  # no chat template applied
        ids = http.post("/tokenize", json={"prompt": prompt}).json()["tokens"]
        n_prompt += len(ids)
        lp = choice.logprobs
        assert len(lp.tokens) == len(ids) + 3
        assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
        assert "".join(lp.tokens) == choice.text
    assert r.usage.prompt_tokens == n_prompt and r.usage.completion_tokens == 6


def test_completions_accepts_token_ids(client, http):
    ids = http.post("/tokenize", json={"prompt": "12 + 34 ="}).json()["tokens"]
    by_ids = client.completions.create(model="toy", prompt=ids, max_tokens=5, temperature=0).choices[0].text
    by_text = client.completions.create(model="toy", prompt="12 + 34 =", max_tokens=5, temperature=0).choices[0].text
    assert by_ids == by_text


def test_tokenize_detokenize_roundtrip(http):
    ids = http.post("/tokenize", json={"prompt": "What is 1 + 2?"}).json()
    assert ids["count"] == len(ids["tokens"]) and ids["max_model_len"] == 1024
    back = http.post("/detokenize", json={"tokens": ids["tokens"]}).json()["prompt"]
    assert back.endswith("What is 1 + 2?")


def test_version_health_and_docs_open(server):
    for path in ("/health", "/version", "/openapi.json", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert "/v1/chat/completions" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_embeddings_float_and_base64(client, server):
    floats = client.embeddings.create(model="toy", input=["12 + 34", "hello"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    vec = np.array(floats.data[0].embedding)
    assert vec.shape == (128,) and abs(np.linalg.norm(vec) - 1) < 1e-4
    raw = httpx.post(server.base_url + "/embeddings", headers={"Authorization": f"Bearer {API_KEY}"},
                     json={"model": "toy", "input": "12 + 34", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype=np.float32)
    np.testing.assert_allclose(decoded, vec, atol=1e-6)
    assert floats.usage.prompt_tokens > 0
