"""Guard hooks (`--guard module:function`) and the built-in `--blocklist`, through a real server and the openai SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.serve.conftest import API_KEY, start_server, stop_server
from tests.serve.test_tenancy import ADMIN_KEY, flush, new_key, sdk, usage_rows


@pytest.fixture(scope="module")
def guarded(toy_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    database = str(root / "swiftkit.db")
    srv = start_server(["--model", str(toy_model), "--served-model-name", "toy", "--dtype", "float32",
                        "--max-model-len", "512", "--database", database, "--api-key", API_KEY, "--admin-key", ADMIN_KEY,
                        "--audit-content", "--blocklist", r"secret\s+plan", "--guard", "tests.serve.guard_hooks:guard"],
                       root / "server.log")
    srv.database = database
    yield srv
    stop_server(srv)


def test_blocklist_refuses_requests_with_a_400_that_is_audited(guarded):
    secret, key_id = new_key(guarded.database, "--tenant", "blocked")
    client = sdk(guarded, secret)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "the SECRET  plan?"}],
                                           max_tokens=4, stream=stream)
        assert refused.value.code == "content_blocked" and "blocked pattern #1" in refused.value.message
    flush(guarded)
    rows = usage_rows(guarded.database, key_id)
    assert [(r["status"], r["error_type"], r["completion_tokens"]) for r in rows] == [(400, "invalid_request_error", 0)] * 2


def test_guard_rewrites_the_request_and_the_response(guarded):
    secret, key_id = new_key(guarded.database, "--tenant", "redacted")
    r = sdk(guarded, secret).chat.completions.create(
        model="toy", messages=[{"role": "user", "content": "mail bob@example.com the sum"}], max_tokens=4)
    assert r.system_fingerprint == "guarded" and r.usage.completion_tokens >= 1
    flush(guarded)
    (row,) = usage_rows(guarded.database, key_id)
    assert json.loads(row["request"]) == {"messages": [{"role": "user", "content": "mail [email] the sum"}]}
    assert row["status"] == 200


def test_guard_rejections_and_failures_are_openai_shaped(guarded):
    client = sdk(guarded, API_KEY)
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="toy", prompt="reject me", max_tokens=2)
    assert refused.value.body["message"] == "this prompt is refused by the test guard"
    broken = httpx.post(guarded.base_url + "/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                        json={"model": "toy", "prompt": "crash me", "max_tokens": 2})
    assert broken.status_code == 500 and broken.json()["error"]["type"] == "internal_error"
    quiet, _ = new_key(guarded.database, "--tenant", "quiet")
    with pytest.raises(openai.BadRequestError) as withheld:
        sdk(guarded, quiet).completions.create(model="toy", prompt="1 + 2 =", max_tokens=2)
    assert "withheld" in withheld.value.message
    assert client.completions.create(model="toy", prompt="1 + 2 =", max_tokens=2).system_fingerprint == "guarded"


def test_a_bad_guard_spec_fails_before_the_model_loads(toy_model, tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("serve", "--model", toy_model, "--guard", "no_such_module:fn", "--port", "0", timeout=120)
    assert proc.returncode == 2 and "--guard no_such_module:fn" in proc.stderr
