"""`swiftkit download --hub modelscope`: the real modelscope client against the fake hub's routes."""

from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.hub.conftest import KEPT


def test_modelscope_download_resumes_a_cut_file_and_verifies_every_sha256(tmp_path, hub, hub_env):
    hub.faults.drop_after["model.safetensors"] = 10_600_000
    out = tmp_path / "ms"
    proc = run_cli(
        "download", "org/toy", "--hub", "modelscope", "--output", out, "--endpoint", hub.url, env=hub_env
    )
    assert proc.returncode == 0, proc.stderr
    assert hub.gets("model.safetensors") == [None, "bytes=10600000-"]
    assert (out / "model.safetensors").read_bytes() == hub.repos["org/toy"].files["model.safetensors"]
    source = json.loads((out / "swiftkit.json").read_text())["source"]
    assert source["hub"] == "modelscope" and source["revision"] == "master" and set(source["files"]) == KEPT
    assert source["verification"] == {
        "passed": True,
        "sha256_checked": 8,
        "git_sha1_checked": 0,
        "size_checked": 8,
    }


def test_modelscope_corrupted_file_and_missing_repo(tmp_path, hub, hub_env):
    hub.faults.corrupt.add("config.json")
    proc = run_cli(
        "download",
        "org/toy",
        "--hub",
        "modelscope",
        "--output",
        tmp_path / "c",
        "--endpoint",
        hub.url,
        env=hub_env,
    )
    assert proc.returncode == 2
    assert (
        "verification failed" in proc.stderr
        and "config.json" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "c").exists()

    proc = run_cli(
        "download",
        "org/nope",
        "--hub",
        "modelscope",
        "--output",
        tmp_path / "n",
        "--endpoint",
        hub.url,
        env=hub_env,
    )
    assert proc.returncode == 2
    assert "repository not found" in proc.stderr and "org/nope" in proc.stderr
