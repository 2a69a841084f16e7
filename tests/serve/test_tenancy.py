"""Keys per tenant, their limits, and the usage/audit log, through a real server, the CLI and the openai SDK.

Usage rows are read back from the database itself (SQLAlchemy), never from the server's own report.
PostgreSQL runs the same checks against a real server (`postgres_url`, skipped with the reason when none
can be started).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time

import httpx
import openai
import pytest
import sqlalchemy as sa

from tests.conftest import run_cli
from tests.serve.conftest import API_KEY, start_server, stop_server

ADMIN_KEY = "sk-admin-test"
PROMPT_IDS = [5, 6, 7, 8, 9]  # a 5-token prompt: every completion below uses exactly 5 + max_tokens tokens


def new_key(database: str, *args: str) -> tuple[str, str]:
    """(secret, key id) of a key made by `swiftkit keys create`, as a user would."""
    proc = run_cli("keys", "create", "--database", database, *args, check=True, timeout=120)
    secret = proc.stdout.strip().splitlines()[-1]
    key_id = proc.stderr.split("created ", 1)[1].split()[0]
    assert secret.startswith("sk-swk-") and key_id.startswith("key_")
    return secret, key_id


def sdk(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)


def usage_rows(database: str, key_id: str | None = None) -> list[dict]:
    engine = sa.create_engine(database if "://" in database else f"sqlite:///{database}")
    query = "SELECT * FROM usage" + (" WHERE key_id = :k" if key_id else "") + " ORDER BY id"
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(query), {"k": key_id})]
    engine.dispose()
    return rows


def flush(server) -> None:
    """The admin usage route writes the server's buffer first: afterwards every finished request has its row."""
    r = httpx.get(server.base_url + "/admin/usage", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert r.status_code == 200, r.text


def complete(client: openai.OpenAI, max_tokens: int = 5, model: str = "toy"):
    return client.completions.create(model=model, prompt=PROMPT_IDS, max_tokens=max_tokens,
                                     extra_body={"ignore_eos": True})


@pytest.fixture(scope="module")
def tenant_server(toy_model, adapters, tmp_path_factory):
    root = tmp_path_factory.mktemp("tenancy")
    database = str(root / "swiftkit.db")
    srv = start_server([
        "--model", str(toy_model), "--served-model-name", "toy", "--dtype", "float32", "--max-model-len", "512",
        "--adapter", f"alpha={adapters['alpha']}", "--max-num-seqs", "16",
        "--database", database, "--api-key", API_KEY, "--admin-key", ADMIN_KEY, "--audit-content",
    ], root / "server.log")
    srv.database = database
    yield srv
    stop_server(srv)


def test_wrong_revoked_and_expired_keys_get_401(tenant_server):
    db = tenant_server.database
    secret, key_id = new_key(db, "--tenant", "acme")
    assert complete(sdk(tenant_server, secret)).usage.completion_tokens == 5
    assert complete(sdk(tenant_server, API_KEY)).usage.completion_tokens == 5  # the shared --api-key still works

    with pytest.raises(openai.AuthenticationError) as wrong:
        complete(sdk(tenant_server, secret + "x"))
    assert wrong.value.code == "invalid_api_key"

    expired, _ = new_key(db, "--tenant", "acme", "--expires", "2020-01-01")
    with pytest.raises(openai.AuthenticationError) as late:
        complete(sdk(tenant_server, expired))
    assert late.value.code == "expired_api_key"

    run_cli("keys", "revoke", key_id, "--database", db, check=True, timeout=120)
    deadline = time.monotonic() + 5
    while True:  # servers re-read a key within a second
        try:
            complete(sdk(tenant_server, secret))
        except openai.AuthenticationError as exc:
            assert exc.code == "revoked_api_key" and key_id in exc.message
            break
        assert time.monotonic() < deadline, "the revoked key was still accepted after 5 s"
        time.sleep(0.2)
    listed = json.loads(run_cli("keys", "list", "--database", db, "--format", "json", check=True).stdout)
    assert {k["id"]: k["state"] for k in listed}[key_id] == "revoked"
    assert all("hash" not in k and not any(str(v).startswith("sk-swk-") for v in k.values()) for k in listed)
    with sqlite3.connect(db) as conn:  # only the hash is stored
        assert secret not in json.dumps(conn.execute("SELECT * FROM api_keys").fetchall())


def test_model_not_allowed_is_403(tenant_server):
    secret, _ = new_key(tenant_server.database, "--tenant", "lab", "--allow-model", "alpha")
    client = sdk(tenant_server, secret)
    assert complete(client, model="alpha").usage.completion_tokens == 5
    with pytest.raises(openai.PermissionDeniedError) as denied:
        complete(client, model="toy")
    assert denied.value.code == "model_not_allowed" and denied.value.status_code == 403
    assert [m.id for m in client.models.list()] == ["alpha"]  # a key lists only what it may use
    with pytest.raises(openai.PermissionDeniedError):
        client.models.retrieve("toy")
    assert {m.id for m in sdk(tenant_server, API_KEY).models.list()} == {"toy", "alpha"}


def test_rpm_limit_gives_429_with_headers_at_the_right_count(tenant_server):
    secret, _ = new_key(tenant_server.database, "--tenant", "rpm", "--rpm", "3")
    client = sdk(tenant_server, secret)
    remaining = []
    for _ in range(3):
        raw = client.completions.with_raw_response.create(model="toy", prompt=PROMPT_IDS, max_tokens=1)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as limited:
        complete(client)
    r = limited.value.response
    assert limited.value.code == "rate_limit_exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 60 and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tpm_limit_counts_finished_tokens(tenant_server):
    secret, _ = new_key(tenant_server.database, "--tenant", "tpm", "--tpm", "30")
    client = sdk(tenant_server, secret)
    seen = []
    for _ in range(3):  # 10 tokens each: 30 used after the third
        raw = client.completions.with_raw_response.create(model="toy", prompt=PROMPT_IDS, max_tokens=5,
                                                          extra_body={"ignore_eos": True})
        assert raw.parse().usage.total_tokens == 10
        seen.append(raw.headers["x-ratelimit-remaining-tokens"])
    assert seen == ["30", "20", "10"]  # what was left when each request was admitted
    with pytest.raises(openai.RateLimitError) as limited:
        complete(client)
    assert limited.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_quota_exhausts_with_insufficient_quota(tenant_server):
    secret, _ = new_key(tenant_server.database, "--tenant", "quota", "--quota-tokens", "20", "--quota-period", "day")
    client = sdk(tenant_server, secret)
    complete(client)
    complete(client)  # 20 of 20 tokens used
    with pytest.raises(openai.RateLimitError) as spent:
        complete(client)
    assert spent.value.code == "insufficient_quota" and spent.value.type == "insufficient_quota"


def _calls(client: openai.OpenAI) -> tuple[list[tuple[str, int, int]], str]:
    """One request per route family: (endpoint, prompt tokens, completion tokens) as the client saw them,
    and the first reply's text."""
    seen = []
    messages = [{"role": "user", "content": "What is 1 + 2?"}]
    # special tokens kept in the text: the toy may answer with eos tokens only, and the audited text must not be ""
    r = client.chat.completions.create(model="toy", messages=messages, max_tokens=6,
                                       extra_body={"ignore_eos": True, "skip_special_tokens": False})
    text = r.choices[0].message.content
    seen.append(("/v1/chat/completions", r.usage.prompt_tokens, r.usage.completion_tokens))
    usage = None
    for chunk in client.chat.completions.create(model="alpha", messages=messages, max_tokens=7, stream=True,
                                                stream_options={"include_usage": True}):
        usage = chunk.usage or usage
    seen.append(("/v1/chat/completions", usage.prompt_tokens, usage.completion_tokens))
    r = client.completions.create(model="toy", prompt=["12 + 34 =", "5 + 6 ="], max_tokens=4, n=2)
    seen.append(("/v1/completions", r.usage.prompt_tokens, r.usage.completion_tokens))
    for chunk in client.completions.create(model="toy", prompt="1 + 1 =", max_tokens=5, stream=True,
                                           stream_options={"include_usage": True}):
        usage = chunk.usage or usage
    seen.append(("/v1/completions", usage.prompt_tokens, usage.completion_tokens))
    r = client.responses.create(model="toy", input="Hi", max_output_tokens=5)
    seen.append(("/v1/responses", r.usage.input_tokens, r.usage.output_tokens))
    r = client.embeddings.create(model="toy", input=["the sum", "of two"])
    seen.append(("/v1/embeddings", r.usage.prompt_tokens, 0))
    return seen, text


def check_rows_match(rows: list[dict], seen: list[tuple[str, int, int]], tenant: str) -> None:
    assert [(r["endpoint"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == seen
    for r in rows:
        assert r["tenant"] == tenant and r["status"] == 200 and r["error_type"] is None
        assert r["latency_s"] > 0
        if r["endpoint"] != "/v1/embeddings":
            assert 0 < r["ttft_s"] <= r["latency_s"]


def test_usage_rows_equal_what_the_client_saw(tenant_server):
    db = tenant_server.database
    secret, key_id = new_key(db, "--tenant", "audit")
    client = sdk(tenant_server, secret)
    seen, text = _calls(client)
    with pytest.raises(openai.BadRequestError):  # a client mistake is recorded too
        client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "x"}], max_tokens=10**6)
    flush(tenant_server)
    rows = usage_rows(db, key_id)
    check_rows_match(rows[:-1], seen, "audit")
    assert rows[1]["model"] == "alpha" and rows[1]["adapter"] == "alpha" and rows[0]["adapter"] is None
    assert rows[-1]["status"] == 400 and rows[-1]["error_type"] == "invalid_request_error"
    # --audit-content: the request's messages and the generated text
    assert json.loads(rows[0]["request"]) == {"messages": [{"role": "user", "content": "What is 1 + 2?"}]}
    assert rows[0]["response"] == text and text
    report = json.loads(run_cli("usage", "--database", db, "--tenant", "audit", "--format", "json", check=True).stdout)
    assert sum(r["requests"] for r in report) == len(seen) + 1
    assert sum(r["total_tokens"] for r in report) == sum(p + c for _, p, c in seen)
    csv_lines = run_cli("usage", "--database", db, "--tenant", "audit", "--format", "csv", check=True).stdout.split()
    assert csv_lines[0].startswith("day,tenant,model,requests") and len(csv_lines) == 1 + len(report)


def test_admin_routes_need_the_admin_key(tenant_server):
    secret, _ = new_key(tenant_server.database, "--tenant", "plain")
    for key, status in ((secret, 403), (API_KEY, 403), ("nope", 401), (ADMIN_KEY, 200)):
        r = httpx.get(tenant_server.base_url + "/admin/keys", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == status, (key, r.text)
    assert any(k["tenant"] == "plain" for k in r.json()["data"])


def test_sigterm_during_16_streams_loses_no_usage_row(toy_model, tmp_path):
    database = str(tmp_path / "swiftkit.db")
    secret, key_id = new_key(database, "--tenant", "drain")
    server = start_server(["--model", str(toy_model), "--served-model-name", "toy", "--dtype", "float32",
                           "--max-model-len", "512", "--max-num-seqs", "16", "--database", database],
                          tmp_path / "server.log")
    client = sdk(server, secret)
    results: list = [None] * 16
    started = threading.Barrier(17)

    def stream(i: int) -> None:
        chunks = client.completions.create(model="toy", prompt=PROMPT_IDS, max_tokens=120 + i, stream=True,
                                           stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        usage = None
        first = True
        for chunk in chunks:
            if first:
                started.wait(60)
                first = False
            usage = chunk.usage or usage
        results[i] = usage

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]
    try:
        for t in threads:
            t.start()
        started.wait(60)  # every stream has its first event: all 16 are running
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        assert server.proc.wait(60) == 0
    finally:
        stop_server(server)
    assert all(u is not None for u in results), "a stream did not finish during the drain"
    rows = usage_rows(database, key_id)
    assert len(rows) == 16
    assert sorted((r["prompt_tokens"], r["completion_tokens"]) for r in rows) == sorted(
        (u.prompt_tokens, u.completion_tokens) for u in results)
    assert {u.completion_tokens for u in results} == set(range(120, 136))


def test_full_buffer_drops_and_counts_rows(toy_model, tmp_path):
    """The database is locked by another writer: the server keeps answering, holds --audit-buffer rows, drops
    and counts the rest; once the lock is gone, every row it kept is written."""
    database = str(tmp_path / "swiftkit.db")
    secret, key_id = new_key(database, "--tenant", "busy")
    server = start_server(["--model", str(toy_model), "--served-model-name", "toy", "--dtype", "float32",
                           "--max-model-len", "512", "--database", database, "--audit-buffer", "3"],
                          tmp_path / "server.log")
    lock = sqlite3.connect(database, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        client = sdk(server, secret)
        for _ in range(12):
            assert complete(client, max_tokens=2).usage.total_tokens == 7
        dropped = server.metric("swiftkit_usage_dropped_total")
        assert dropped > 0
        lock.execute("ROLLBACK")
        lock.close()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
    finally:
        stop_server(server)
    rows = usage_rows(database, key_id)
    assert len(rows) + dropped == 12 and all(r["completion_tokens"] == 2 for r in rows)


@pytest.mark.postgres
def test_keys_limits_and_usage_rows_in_postgresql(postgres_url, toy_model, adapters, tmp_path):
    secret, key_id = new_key(postgres_url, "--tenant", "pg")
    quota, _ = new_key(postgres_url, "--tenant", "pg-quota", "--quota-tokens", "20", "--quota-period", "day")
    server = start_server(["--model", str(toy_model), "--served-model-name", "toy", "--dtype", "float32",
                           "--max-model-len", "512", "--adapter", f"alpha={adapters['alpha']}",
                           "--database", postgres_url, "--admin-key", ADMIN_KEY], tmp_path / "server.log")
    try:
        seen, _ = _calls(sdk(server, secret))
        complete(sdk(server, quota))
        complete(sdk(server, quota))
        with pytest.raises(openai.RateLimitError) as spent:
            complete(sdk(server, quota))
        assert spent.value.code == "insufficient_quota"
        with pytest.raises(openai.AuthenticationError):
            complete(sdk(server, secret[:-1]))
        flush(server)
    finally:
        stop_server(server)
    check_rows_match(usage_rows(postgres_url, key_id), seen, "pg")
    report = json.loads(run_cli("usage", "--database", postgres_url, "--tenant", "pg", "--format", "json",
                                check=True).stdout)
    assert sum(r["total_tokens"] for r in report) == sum(p + c for _, p, c in seen)
    assert {r["model"] for r in report} == {"toy", "alpha"}


def test_ip_allow_list(toy_model, tmp_path):
    server = start_server(["--model", str(toy_model), "--served-model-name", "toy", "--dtype", "float32",
                           "--max-model-len", "128", "--api-key", API_KEY, "--allow-ip", "10.0.0.0/8",
                           "--allow-ip", "192.168.1.7"], tmp_path / "server.log")
    try:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            sdk(server, API_KEY).models.list()
        assert refused.value.code == "ip_not_allowed" and "127.0.0.1" in refused.value.message
        assert httpx.get(server.url + "/health").status_code == 200  # load balancers' probes stay open
    finally:
        stop_server(server)
    proc = run_cli("serve", "--model", toy_model, "--allow-ip", "10.0.0.300", "--port", "0", timeout=120)
    assert proc.returncode == 2 and "--allow-ip" in proc.stderr
