"""Client mistakes get OpenAI-shaped errors with the right status, and the server stays healthy."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.serve.conftest import API_KEY

CHAT = {"model": "toy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_error(r: httpx.Response, status: int, type_: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if type_:
        assert err["type"] == type_
    return err


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
def test_bad_or_missing_key_is_401(server, headers):
    r = httpx.post(server.base_url + "/chat/completions", json=CHAT, headers=headers)
    assert_error(r, 401, "authentication_error")


def test_sdk_raises_authentication_error(server):
    bad = openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_health_open_without_key(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


def test_unknown_model_is_404(http, client):
    err = assert_error(http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}), 404, "not_found_error")
    assert err["param"] == "model" and "toy" in err["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="1", max_tokens=1)


def test_prompt_longer_than_context_is_400(http):
    long = "1 + 2 = 3\n" * 400  # far beyond --max-model-len 1024
    err = assert_error(http.post("/v1/completions", json={"model": "toy", "prompt": long, "max_tokens": 1}), 400)
    assert err["code"] == "context_length_exceeded"
    err = assert_error(http.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": long}]}), 400)
    assert "context" in err["message"]


@pytest.mark.parametrize("patch", [
    {"temperature": 5},
    {"max_tokens": 10_000},
    {"messages": []},
    {"messages": [{"role": "wizard", "content": "x"}]},
    {"n": 0},
    {"logit_bias": {"abc": 1}},
    {"logit_bias": {"999999": 1}},
    {"top_logprobs": 3},
    {"response_format": {"type": "json_schema"}},
    {"tool_choice": "required"},
    {"stop_token_ids": [-1]},
])
def test_bad_fields_are_400_never_500(http, patch):
    assert_error(http.post("/v1/chat/completions", json={**CHAT, **patch}), 400)


def test_malformed_json_is_400(http):
    r = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 400)


def test_unknown_route_is_404_json(http):
    assert_error(http.get("/v1/nothing-here"), 404)


def test_server_healthy_after_errors(client):
    r = client.chat.completions.create(model="toy", messages=CHAT["messages"], max_tokens=2)
    assert r.choices[0].message is not None


def test_disconnect_mid_stream_frees_slot(server, http):
    # Special tokens shown, so events flow from the first token: the toy soon repeats its hidden eos, and a stream
    # of hidden tokens has nothing to send until it ends (then it could end before this test disconnects).
    body = {"model": "toy", "prompt": "1 + 2 =", "max_tokens": 1000, "ignore_eos": True, "stream": True,
            "skip_special_tokens": False}
    with http.stream("POST", "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
        assert server.metric("swiftkit_running_requests") >= 1
    deadline = time.monotonic() + 5
    while server.metric("swiftkit_running_requests") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("swiftkit_running_requests") == 0
    tokens = server.metric("swiftkit_generation_tokens_total")
    time.sleep(0.3)
    assert server.metric("swiftkit_generation_tokens_total") == tokens


def test_full_queue_is_429(server):
    """16 slots + 4 queue places (--max-queue 4): of 21 simultaneous requests exactly one is refused at once."""
    async def main() -> list[int]:
        body = {"model": "toy", "prompt": "1 + 2 =", "max_tokens": 1000, "ignore_eos": True, "stream": True}
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=60) as c:
            streams = [c.stream("POST", "/v1/completions", json=body) for _ in range(21)]
            opened = await asyncio.gather(*(s.__aenter__() for s in streams))
            refused = [(await r.aread(), r) for r in opened if r.status_code == 429]
            for s in streams:
                await s.__aexit__(None, None, None)
            statuses = sorted(r.status_code for r in opened)
            return statuses, [json.loads(body)["error"]["type"] for body, _ in refused]

    statuses, types = asyncio.run(main())
    assert statuses == [200] * 20 + [429]
    assert types == ["rate_limit_error"]
    # the 20 streams were dropped: let their slots free before the next test needs one (else a 429 there)
    deadline = time.monotonic() + 10
    while (server.metric("swiftkit_running_requests") or server.metric("swiftkit_queue_depth")) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
