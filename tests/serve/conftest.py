"""One real `swiftkit serve` process for the serve tests (toy model, two LoRA adapters, an API key)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

API_KEY = "sk-swiftkit-test"
# `make test-vllm` sets SWIFTKIT_TEST_ENGINE=vllm: every server these tests start gets `--engine vllm`.
ENGINE = os.environ.get("SWIFTKIT_TEST_ENGINE")
# Tests of what the built-in engine does and another engine does not, deselected under that engine.
ENGINE_SPECIFIC = {
    "vllm": {
        "test_embeddings_float_and_base64": "embeddings of the served model itself: vLLM holds its weights, so under "
        "--engine vllm /v1/embeddings needs --embedding-model (a clear 400 otherwise)",
    },
}


def pytest_collection_modifyitems(config, items):
    skip = ENGINE_SPECIFIC.get(ENGINE or "", {})
    here = Path(__file__).parent
    dropped = [item for item in items if item.path.is_relative_to(here) and item.originalname in skip]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)


def start_server(args: list[str], log: Path, timeout: float = 120) -> Server:
    port = free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "swiftkit", "serve", "--port", str(port), *args,
             *(["--engine", ENGINE] if ENGINE else [])],
            stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return Server(proc, port, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"server did not come up:\n{log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A small LoRA with random (non-zero) B so its outputs really differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def adapters(toy_model: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(toy_model, root / name, seed) for name, seed in (("alpha", 1), ("beta", 2))}


@pytest.fixture(scope="session")
def server(toy_model: Path, adapters: dict[str, Path], tmp_path_factory) -> Server:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    srv = start_server([
        "--model", str(toy_model), "--served-model-name", "toy", "--dtype", "float32",
        "--adapter", f"alpha={adapters['alpha']}", "--adapter", f"beta={adapters['beta']}",
        "--api-key", API_KEY, "--max-num-seqs", "16", "--max-queue", "4", "--max-model-len", "1024",
    ], log)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (never Playwright's own browser download).

    Module-scoped: Playwright's sync API keeps an event loop running on the main thread while it is open, and
    every later test that calls asyncio.run (the serve hardening and streaming tests) would fail under it."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on PATH: `apt-get install chromium` to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install 'swiftkit[dev]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def client(server: Server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def http(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)


@pytest.fixture(scope="session")
def reference(toy_model: Path, adapters: dict[str, Path]):
    """In-process greedy generation: base model and each adapter, as a user would run them."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_model)
    models = {None: AutoModelForCausalLM.from_pretrained(toy_model, dtype=torch.float32).eval()}
    for name, path in adapters.items():
        base = AutoModelForCausalLM.from_pretrained(toy_model, dtype=torch.float32)
        models[name] = PeftModel.from_pretrained(base, path).eval()

    def generate(prompt_ids: list[int], max_new_tokens: int, adapter: str | None = None) -> list[int]:
        with torch.inference_mode():
            out = models[adapter].generate(
                input_ids=torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id,
            )
        return out[0, len(prompt_ids):].tolist()

    generate.tokenizer = tok
    return generate


def _postgres_bindir() -> Path | None:
    import glob
    import shutil

    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
    return Path(found).resolve().parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the session (Debian's `postgresql` binaries), in a temporary directory.

    Skipped, with the reason, where none can be started. As root (CI), the server runs as the `postgres`
    user the Debian package creates: PostgreSQL refuses to run as root.
    """
    import shutil
    import tempfile

    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'swiftkit[postgres]')")
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb): `apt-get install postgresql` to run these tests")
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="swiftkit-pg-"))  # not under pytest's tmp: the postgres user must reach it
    if prefix:
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", free_port()
    initdb = subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "swiftkit", "--auth=trust",
                             "-E", "UTF8", "--no-sync"], capture_output=True, text=True)
    if initdb.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {initdb.stderr.strip()[-300:]}")
    start = subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                           capture_output=True, text=True)
    if start.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {log.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg://swiftkit@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
