"""`swiftkit download` driving the real huggingface_hub client against the fake hub, faults included."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.hub.conftest import KEPT, TEMPLATE


def _error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {"swiftkit.json"}


def test_download_default_selection_is_verified_and_recorded(tmp_path, hub, hub_env):
    out = tmp_path / "toy"
    proc = run_cli("download", "org/toy", "--output", out, "--endpoint", hub.url, env=hub_env)
    assert proc.returncode == 0, proc.stderr
    assert _files(out) == KEPT  # no .bin duplicate, optimizer state, onnx export or client bookkeeping
    assert not any(
        p.endswith(("pytorch_model.bin", "optimizer.pt", "model.onnx")) for _, p, _ in hub.requests
    )
    manifest = json.loads((out / "swiftkit.json").read_text())
    assert (manifest["kind"], manifest["stage"]) == ("model", "download")
    source = manifest["source"]
    assert source["commit"] == hub.repos["org/toy"].commit and source["revision"] == "main"
    repo_files = hub.repos["org/toy"].files
    assert source["files"] == {
        n: {"size": len(repo_files[n]), "sha256": hashlib.sha256(repo_files[n]).hexdigest()} for n in KEPT
    }
    assert source["verification"] == {
        "passed": True,
        "sha256_checked": 1,
        "git_sha1_checked": 7,
        "size_checked": 8,
    }
    assert "token" not in manifest["config"]
    assert manifest["serving"]["chat_template"] == TEMPLATE
    assert (manifest["serving"]["eos_token"], manifest["serving"]["pad_token"]) == (
        "<|im_end|>",
        "<|endoftext|>",
    )
    assert manifest["serving"]["eos_token_ids"] == [2, 3]


def test_include_exclude_patterns(tmp_path, hub, hub_env):
    out = tmp_path / "bin"
    proc = run_cli(
        "download",
        "org/toy",
        "--output",
        out,
        "--include",
        "*.bin",
        "--include",
        "*.json",
        "--exclude",
        "tokenizer*",
        env=hub_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert _files(out) == {"pytorch_model.bin", "config.json", "generation_config.json"}


def test_dropped_and_stalled_streams_resume(tmp_path, hub, hub_env):
    hub.faults.drop_after["model.safetensors"] = 10_600_000
    hub.faults.stall_after["tokenizer.json"] = 10  # then silence: the client's read times out and retries
    out = tmp_path / "toy"
    proc = run_cli("download", "org/toy", "--output", out, "--timeout", "2", env=hub_env)
    assert proc.returncode == 0, proc.stderr
    first, second = hub.gets("model.safetensors")
    assert first is None and second == f"bytes={10 * 1024 * 1024}-"  # continues after the last whole chunk
    assert len(hub.gets("tokenizer.json")) == 2
    for name in ("model.safetensors", "tokenizer.json"):
        assert (out / name).read_bytes() == hub.repos["org/toy"].files[name]


def test_corrupted_file_is_caught_and_rerun_fetches_only_it(tmp_path, hub, hub_env):
    hub.faults.corrupt.add("model.safetensors")
    out = tmp_path / "toy"
    proc = run_cli("download", "org/toy", "--output", out, env=hub_env)
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "verification failed" in line and "model.safetensors" in line and "sha256" in line
    assert not out.exists()  # nothing that looks finished

    hub.faults.corrupt.clear()
    hub.requests.clear()
    proc = run_cli("download", "org/toy", "--output", out, env=hub_env)
    assert proc.returncode == 0, proc.stderr
    fetched = {p.rsplit("/", 1)[-1] for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p}
    assert fetched == {"model.safetensors"}  # the files verified the first time were kept
    assert json.loads((out / "swiftkit.json").read_text())["source"]["verification"]["passed"] is True


def test_missing_repo_is_one_clear_line(tmp_path, hub_env):
    proc = run_cli("download", "org/nope", "--output", tmp_path / "x", env=hub_env)
    assert proc.returncode == 2
    assert "repository not found" in _error_line(proc) and "org/nope" in proc.stderr
    assert not (tmp_path / ".x.partial").exists()


def test_gated_and_private_repos_explain_the_token(tmp_path, hub_env):
    proc = run_cli("download", "org/gated", "--output", tmp_path / "g", env=hub_env)
    assert proc.returncode == 2
    assert "gated" in _error_line(proc) and "401" in proc.stderr and "--token" in proc.stderr

    proc = run_cli("download", "org/gated", "--output", tmp_path / "g", "--token", "hf_wrong", env=hub_env)
    assert proc.returncode == 2
    assert "gated" in _error_line(proc) and "403" in proc.stderr

    proc = run_cli(
        "download", "org/gated", "--output", tmp_path / "g", "--token", "hf_good_token", env=hub_env
    )
    assert proc.returncode == 0, proc.stderr

    proc = run_cli("download", "org/private", "--output", tmp_path / "p", env=hub_env)
    assert proc.returncode == 2
    assert "private" in _error_line(proc) and "--token" in proc.stderr


@pytest.mark.parametrize("fault", ["hang", "hang_files"])
def test_hung_endpoint_fails_within_the_timeout(tmp_path, hub, hub_env, fault):
    setattr(hub.faults, fault, True)  # the whole server, or only file requests, never answer
    started = time.monotonic()
    proc = run_cli(
        "download",
        "org/toy",
        "--output",
        tmp_path / "x",
        "--hub",
        "hf",
        "--timeout",
        "1",
        env=hub_env,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "no answer from" in line and "1s" in line
    assert (
        "mirror" in proc.stderr
        and "--hub modelscope" in proc.stderr
        and "local model directory" in proc.stderr
    )
    assert elapsed < 15


def test_offline_mode_says_so(tmp_path, hub_env):
    proc = run_cli("download", "org/toy", "--output", tmp_path / "x", env={**hub_env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "offline" in _error_line(proc) and "HF_HUB_OFFLINE" in proc.stderr


def test_unreachable_hf_falls_back_to_modelscope_then_reports_both(tmp_path, hub_env):
    env = {**hub_env, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on the discard port
    proc = run_cli("download", "org/toy", "--output", tmp_path / "x", "--timeout", "2", env=env, timeout=120)
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "cannot connect to http://127.0.0.1:9" in line and "trying modelscope" in proc.stderr


@pytest.mark.real
def test_gguf_repo_downloads_one_file_and_imports_it(tmp_path, hub, hub_env, smollm2_gguf):
    from tests.hub.fake_hub import FakeRepo

    real = smollm2_gguf.read_bytes()
    hub.repos["org/smol-gguf"] = FakeRepo(
        {"SmolLM2-135M-Instruct.Q4_1.gguf": real, "SmolLM2-135M-Instruct.Q2_K.gguf": b"not a gguf" * 100, "README.md": b"# smol\n"}
    )
    out = tmp_path / "smol"
    proc = run_cli("download", "org/smol-gguf", "--output", out, "--endpoint", hub.url, env=hub_env)
    assert proc.returncode == 0, proc.stderr
    # The most precise file is chosen by itself (Q4_1 over Q2_K), verified, kept, and imported beside it.
    assert not any(p.endswith("Q2_K.gguf") for _, p, _ in hub.requests)
    assert (out / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes() == real
    manifest = json.loads((out / "swiftkit.json").read_text())
    assert manifest["source"]["gguf"]["sha256"] == hashlib.sha256(real).hexdigest()
    assert manifest["source"]["gguf"]["quant_type"] == "Q4_1" and (out / "model.safetensors").is_file()
    assert manifest["serving"]["eos_token"] == "<|im_end|>"

    proc = run_cli("download", "org/smol-gguf", "--gguf-file", "Q2_K", "--output", tmp_path / "bad", "--endpoint", hub.url, env=hub_env)
    assert proc.returncode == 2 and "not a readable GGUF file" in _error_line(proc)
    proc = run_cli("download", "org/smol-gguf", "--gguf-file", "IQ1_S", "--output", tmp_path / "none", "--endpoint", hub.url, env=hub_env)
    assert proc.returncode == 2 and "no .gguf file matches --gguf-file IQ1_S" in _error_line(proc)
