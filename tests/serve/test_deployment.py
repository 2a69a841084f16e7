"""Several models behind one endpoint (`swiftkit serve --config deployment.yaml`), through a real server,
its real engine processes and the openai SDK: routing by name, /v1/models, a worker killed with SIGKILL,
config errors up front."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.conftest import assert_one_line_error, run_cli
from tests.serve.conftest import API_KEY, start_server, stop_server
from tests.serve.test_tenancy import ADMIN_KEY, flush, new_key, usage_rows

PROMPT = [5, 6, 7, 8, 9]


def write_deployment(path: Path, models: list[dict], **top) -> Path:
    path.write_text(yaml.safe_dump({"models": models, **top}))
    return path


@pytest.fixture(scope="module")
def deployment(toy_model: Path, adapters: dict[str, Path], tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    config = write_deployment(root / "deployment.yaml", [
        {"model": str(toy_model), "served_model_name": "toy-a", "adapter": [f"alpha={adapters['alpha']}"],
         "max_model_len": 1024},  # room for a stream that is surely still running when its worker is killed
        {"model": str(toy_model), "served_model_name": "toy-b", "max_num_seqs": 4, "replicas": 2},
    ], dtype="float32", max_model_len=256, api_key=API_KEY, admin_key=ADMIN_KEY,
       database=str(root / "swiftkit.db"))
    server = start_server(["--config", str(config)], root / "server.log", timeout=240)
    server.database = str(root / "swiftkit.db")
    yield server
    stop_server(server)


def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=30)


def greedy(client: openai.OpenAI, model: str, max_tokens: int = 6) -> list[str]:
    out = client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0,
                                    logprobs=0, extra_body={"ignore_eos": True})
    return out.choices[0].logprobs.tokens


def test_models_answer_by_name(deployment):
    client = sdk(deployment)
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {"toy-a", "alpha", "toy-b"}
    assert listed["alpha"].parent == "toy-a" and listed["toy-b"].max_model_len == 256
    assert listed["toy-a"].max_model_len == listed["alpha"].max_model_len == 1024  # an entry's own value wins
    a, b, alpha = greedy(client, "toy-a"), greedy(client, "toy-b"), greedy(client, "alpha")
    assert a == b  # the same weights under two names, in two engine processes
    assert alpha != a  # the adapter's random LoRA changes the output
    chat = client.chat.completions.create(model="toy-b", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert chat.model == "toy-b" and chat.usage.completion_tokens >= 1
    with pytest.raises(openai.NotFoundError) as err:
        greedy(client, "nope")
    assert "toy-a, alpha, toy-b" in err.value.message
    health = httpx.get(deployment.url + "/health").json()
    assert health["status"] == "ok" and health["models"]["toy-b"]["ready"] == 2


def test_replicas_get_least_loaded_routing(deployment):
    """A burst of 8 requests for toy-b: each replica takes about half (all 8 on one would be [8, 0])."""
    client = sdk(deployment)
    burst = [threading.Thread(target=greedy, args=(client, "toy-b", 200)) for _ in range(8)]
    for t in burst:
        t.start()
    snapshots = []
    while any(t.is_alive() for t in burst):
        workers = httpx.get(deployment.url + "/health").json()["models"]["toy-b"]["workers"]
        snapshots.append([w["inflight"] for w in workers])
        time.sleep(0.02)
    for t in burst:
        t.join()
    peaks = [max(s[i] for s in snapshots) for i in range(2)]
    assert min(peaks) >= 3, snapshots


def test_tenant_key_allows_models_by_name(deployment):
    secret, key_id = new_key(deployment.database, "--tenant", "team-b", "--allow-model", "toy-b")
    client = sdk(deployment)
    client.api_key = secret
    assert [m.id for m in client.models.list().data] == ["toy-b"]
    assert greedy(client, "toy-b", 3)
    for other in ("toy-a", "alpha"):
        with pytest.raises(openai.PermissionDeniedError):
            greedy(client, other)
    flush(deployment)
    rows = usage_rows(deployment.database, key_id)
    assert [(r["model"], r["status"], r["completion_tokens"]) for r in rows if r["endpoint"] == "/v1/completions"] == [
        ("toy-b", 200, 3), ("toy-a", 403, 0), ("alpha", 403, 0)]


def _pids(server) -> dict[str, int]:
    models = httpx.get(server.url + "/health").json()["models"]
    return {name: m["workers"][0]["pid"] for name, m in models.items()}


def test_killed_worker_fails_fast_and_comes_back(deployment):
    client = sdk(deployment)
    victim = _pids(deployment)["toy-a"]
    # A long stream on toy-a is open when its engine process is killed: it ends with an error, at once.
    stream = client.completions.create(model="toy-a", prompt=PROMPT, max_tokens=1000, stream=True,
                                       extra_body={"ignore_eos": True})
    next(iter(stream))
    # Meanwhile toy-b serves without a single failure.
    failures, served, stop = [], [], threading.Event()

    def other_model():
        other = sdk(deployment)
        while not stop.is_set():
            try:
                served.append(greedy(other, "toy-b", 2))
            except Exception as exc:  # noqa: BLE001 - any failure of the other model fails the test
                failures.append(exc)

    background = threading.Thread(target=other_model)
    background.start()
    try:
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(openai.APIError) as died:
            for _ in stream:
                pass
        assert "being restarted" in str(died.value)
        assert time.monotonic() - killed < 5
        # While it restarts: fast, OpenAI-shaped 503s for toy-a and its adapter, reported in /health and /metrics.
        r = httpx.post(deployment.base_url + "/completions", json={"model": "alpha", "prompt": PROMPT, "max_tokens": 2},
                       headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_unavailable", r.text
        health = httpx.get(deployment.url + "/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert deployment.metric('swiftkit_worker_up{model="toy-a",replica="0"}') == 0.0
        deadline = time.monotonic() + 120
        while httpx.get(deployment.url + "/health").json()["status"] != "ok":
            assert time.monotonic() < deadline, "the worker did not come back"
            time.sleep(0.3)
        assert greedy(client, "toy-a") == greedy(client, "toy-b")
        assert _pids(deployment)["toy-a"] != victim
        assert deployment.metric('swiftkit_worker_restarts_total{model="toy-a",replica="0"}') == 1.0
    finally:
        stop.set()
        background.join()
    assert not failures, failures[:3]
    assert len(served) > 3


@pytest.mark.browser
def test_playground_switches_model_and_shows_usage(deployment, browser):
    """The playground of a deployment, with the admin key: every model in the picker, a chat with two of
    them, and the usage view reading the database."""
    from tests.serve.test_playground import chat

    page = browser.new_page()
    page.goto(deployment.url + "/")
    page.fill("#key", ADMIN_KEY)
    page.dispatch_event("#key", "change")
    page.wait_for_function("document.querySelectorAll('#model option').length === 3")
    assert page.locator("#model option").all_text_contents() == ["toy-a", "alpha (adapter of toy-a)", "toy-b"]
    page.fill("#max-tokens", "8")
    page.fill("#extra", '{"ignore_eos": true}')
    for model in ("toy-b", "toy-a"):
        page.select_option("#model", model)
        chat(page, "What is the larger of 3 and 5?")
        assert "8 completion" in page.text_content("#stats")
    assert page.locator(".msg.assistant .who").all_text_contents() == ["toy-b", "toy-a"]
    page.click("#usage-toggle")
    page.wait_for_function("document.querySelectorAll('#usage tbody tr').length > 0")
    rows = [r.split("\t") for r in page.locator("#usage tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent).join('\\t'))")]
    assert {r[2] for r in rows} >= {"toy-a", "toy-b"}, rows
    assert page.text_content("#usage-error") == ""
    page.close()


@pytest.mark.parametrize(("models", "message"), [
    ([{"model": "TOY", "colour": "red"}], "models.0.colour: unknown option"),
    ([{"model": "TOY", "served_model_name": "x"}, {"model": "TOY", "served_model_name": "x"}],
     "models[1] (x): the name `x` is already served by models[0] (x)"),
    ([{"model": "./no/such/model"}], "models[0] (./no/such/model): model not found: ./no/such/model"),
    ([{"model": "TOY", "adapter": ["a=./no/such/adapter"]}], "model not found: ./no/such/adapter"),
])
def test_config_errors_are_one_line(toy_model, tmp_path, models, message):
    models = [{k: (str(toy_model) if v == "TOY" else v) for k, v in m.items()} for m in models]
    config = write_deployment(tmp_path / "d.yaml", models)
    proc = run_cli("serve", "--config", str(config), "--port", "0", timeout=120, env={"COLUMNS": "300"})
    assert_one_line_error(proc, message)


def test_keys_list_stdout_has_no_leading_blank_line(tmp_path):
    proc = run_cli("keys", "list", "--database", str(tmp_path / "k.db"), "--format", "json", check=True, timeout=120)
    assert proc.stdout == "[]\n"


def test_sigterm_drains_every_worker(toy_model, tmp_path):
    """What a load balancer relies on: on SIGTERM /health turns 503 at once, running streams finish, exit 0."""
    config = write_deployment(tmp_path / "d.yaml", [
        {"model": str(toy_model), "served_model_name": "one"}, {"model": str(toy_model), "served_model_name": "two"},
    ], dtype="float32", max_model_len=1024, ui=False)
    server = start_server(["--config", str(config)], tmp_path / "server.log", timeout=240)
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=60)
        streams = [client.completions.create(model=m, prompt=PROMPT, max_tokens=1000, stream=True,
                                             extra_body={"ignore_eos": True}) for m in ("one", "two")]
        firsts = [next(iter(s)) for s in streams]
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/health").status_code != 503:
            assert time.monotonic() < deadline
        assert httpx.get(server.url + "/health").json()["status"] == "draining"
        for first, stream in zip(firsts, streams, strict=True):
            chunks = [first, *stream]
            assert chunks[-1].choices[0].finish_reason == "length"
        assert server.proc.wait(timeout=60) == 0
    finally:
        stop_server(server)
