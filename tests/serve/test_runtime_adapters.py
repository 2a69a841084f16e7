"""Adapters loaded and unloaded while a real server runs (--adapter-dir, --watch-adapters): vLLM's
/v1/load_lora_adapter routes through the openai SDK and httpx, the allow-list, and unloading under load."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import start_server, stop_server
from tests.serve.test_openai_api import visible_text

ADMIN, USER = "sk-admin-test", "sk-user-test"
PROMPT = "21 + 43 ="


@pytest.fixture(scope="module")
def root(adapters: dict[str, Path], tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lora-root")
    shutil.copytree(adapters["alpha"], root / "alpha")  # picked up by the watcher at start
    return root


@pytest.fixture(scope="module")
def srv(toy_model: Path, root: Path, tmp_path_factory):
    server = start_server([
        "--model", str(toy_model), "--served-model-name", "toy", "--dtype", "float32", "--max-model-len", "1024",
        "--adapter-dir", str(root), "--watch-adapters", "--admin-key", ADMIN, "--api-key", USER,
    ], tmp_path_factory.mktemp("runtime-adapters") / "server.log")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def admin(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120)


@pytest.fixture(scope="module")
def client(srv):
    from openai import OpenAI

    return OpenAI(base_url=srv.base_url, api_key=USER, max_retries=0, timeout=120)


def served(client) -> dict[str, str | None]:
    return {m.id: getattr(m, "parent", None) for m in client.models.list().data}


def wait_until(check, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def greedy(client, model: str, max_tokens: int = 16):
    return client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0,
                                     extra_body={"ignore_eos": True})


def test_load_by_route_then_generate_equals_peft(admin, client, root, reference):
    r = admin.post("/v1/load_lora_adapter", json={"lora_name": "math", "lora_path": str(root / "alpha")})
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "lora_adapter", "id": "math", "status": "loaded", "root": str(root / "alpha"), "parent": "toy"}
    assert served(client)["math"] == "toy"
    ids = admin.post("/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    tok = reference.tokenizer
    assert greedy(client, "math").choices[0].text == visible_text(tok, reference(ids, 16, "alpha"))
    assert greedy(client, "toy").choices[0].text == visible_text(tok, reference(ids, 16))  # the base is untouched
    assert visible_text(tok, reference(ids, 16, "alpha")) != visible_text(tok, reference(ids, 16))


def test_watched_folder_loads_new_adapters_and_unloads_removed_ones(client, root):
    assert wait_until(lambda: "alpha" in served(client)), "the watcher never loaded the folder present at start"
    shutil.copytree(root / "alpha", root / ".gamma-tmp")  # written under a hidden name, then renamed into place
    (root / ".gamma-tmp").rename(root / "gamma")
    assert wait_until(lambda: "gamma" in served(client)), "a new adapter folder was not picked up"
    assert greedy(client, "gamma").choices[0].finish_reason == "length"
    shutil.rmtree(root / "gamma")
    assert wait_until(lambda: "gamma" not in served(client)), "a removed adapter folder stayed served"
    with pytest.raises(Exception) as err:
        greedy(client, "gamma")
    assert getattr(err.value, "status_code", None) == 404


@pytest.mark.parametrize("lora_path, status, code", [
    ("../outside", 403, "path_not_allowed"),
    ("/etc", 403, "path_not_allowed"),
    ("{root}", 403, "path_not_allowed"),  # the allowed folder itself is not an adapter inside it
    ("{root}/alpha/../../x", 403, "path_not_allowed"),
    ("link-out", 403, "path_not_allowed"),  # a symlink inside the folder pointing out of it
    ("missing", 400, None),
    ("not-an-adapter", 400, None),
])
def test_paths_outside_the_allowed_folders_are_refused(admin, root, tmp_path, lora_path, status, code):
    (root / "not-an-adapter").mkdir(exist_ok=True)
    (root / "not-an-adapter" / "notes.txt").write_text("hello")
    outside = tmp_path / "outside-adapter"
    if not outside.exists():
        shutil.copytree(root / "alpha", outside)
    link = root / "link-out"
    if not link.is_symlink():
        link.symlink_to(outside)
    r = admin.post("/v1/load_lora_adapter", json={"lora_name": "evil", "lora_path": lora_path.format(root=root)})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == "lora_path" and (code is None or error["code"] == code)
    assert "\n" not in error["message"]


def test_bad_requests_are_4xx_with_a_clear_message(srv, admin, root):
    post = admin.post
    clash = post("/v1/load_lora_adapter", json={"lora_name": "toy", "lora_path": str(root / "alpha")})
    assert clash.status_code == 400 and clash.json()["error"]["code"] == "adapter_exists"
    assert post("/v1/load_lora_adapter", json={"lora_name": "a b/c", "lora_path": str(root / "alpha")}).status_code == 400
    assert post("/v1/load_lora_adapter", json={"lora_name": "x"}).status_code == 400
    gone = post("/v1/unload_lora_adapter", json={"lora_name": "never-loaded"})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "adapter_not_found"
    user = httpx.post(srv.url + "/v1/load_lora_adapter", headers={"Authorization": f"Bearer {USER}"},
                      json={"lora_name": "y", "lora_path": str(root / "alpha")})
    assert user.status_code == 401  # the admin key only


def stream_in_thread(client, model: str, max_tokens: int = 400) -> tuple[threading.Thread, threading.Event, dict]:
    """A long greedy stream on `model` in a thread: (the thread, set at its first token, its result)."""
    first_token, done = threading.Event(), {}

    def stream() -> None:
        # Special tokens shown: the toy answers in a few tokens and then repeats its (hidden) eos, and a stream of
        # hidden tokens sends its text only at the end, so "started" would come with "done".
        chunks = client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0, stream=True,
                                           extra_body={"ignore_eos": True, "skip_special_tokens": False})
        text, reason = "", None
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].text:
                text += chunk.choices[0].text
                first_token.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                reason = chunk.choices[0].finish_reason
        done.update(reason=reason, at=time.monotonic(), text=text)

    t = threading.Thread(target=stream)
    t.start()
    return t, first_token, done


def test_load_and_unload_under_load_let_running_streams_finish(admin, client, root):
    base, base_started, base_done = stream_in_thread(client, "toy", 1000)  # runs while the adapter loads
    assert base_started.wait(60)
    assert not base_done
    assert admin.post("/v1/load_lora_adapter", json={"lora_name": "busy", "lora_path": str(root / "alpha")}).status_code == 200
    t, first_token, done = stream_in_thread(client, "busy")
    assert first_token.wait(60)
    r = admin.post("/v1/unload_lora_adapter", json={"lora_name": "busy"})
    unloaded_at = time.monotonic()
    t.join(120)
    assert r.status_code == 200, r.text
    assert done["reason"] == "length"  # the stream ran to its end on the adapter
    assert unloaded_at >= done["at"] - 2.0  # and the unload answered only after it (allowing for a busy client thread)
    assert "busy" not in served(client)
    with pytest.raises(Exception) as err:
        greedy(client, "busy")
    assert getattr(err.value, "status_code", None) == 404
    # The name can be used again at once, and the engine still serves the others.
    assert admin.post("/v1/load_lora_adapter", json={"lora_name": "busy", "lora_path": str(root / "alpha")}).status_code == 200
    assert greedy(client, "busy").choices[0].finish_reason == "length"
    base.join(120)
    assert base_done["reason"] == "length"  # the stream that was running during the load was not disturbed
