"""Hub ids as `--model`: downloaded once into the cache, then resolved with no network; `swiftkit models`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, run_cli

RESOLVE = "from swiftkit.resolve import resolve_model_ref; print(resolve_model_ref({ref!r}).path)"


def _resolve(ref: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RESOLVE.format(ref=ref)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=120,
    )


def test_hub_id_model_ref_is_fetched_once_then_resolved_offline(tmp_path, hub, hub_env):
    proc = _resolve("org/toy", hub_env)
    assert proc.returncode == 0, proc.stderr
    cached = Path(proc.stdout.strip())
    assert cached == tmp_path / "swiftkit-home" / "models" / "hf" / "org" / "toy" / "main"
    assert json.loads((cached / "swiftkit.json").read_text())["source"]["verification"]["passed"] is True

    hub.faults.hang = True  # any network call would now block until the test times out
    hub.requests.clear()
    started = time.monotonic()
    proc = _resolve("org/toy", hub_env)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == cached and hub.requests == []
    assert time.monotonic() - started < 10

    proc = run_cli("models", "--json-output", env=hub_env)
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)
    assert entry["ref"] == "org/toy@main" and entry["hub"] == "hf" and entry["path"] == str(cached)
    assert entry["bytes"] == sum(p.stat().st_size for p in cached.rglob("*") if p.is_file())
    table = run_cli("models", env=hub_env)
    assert "org/toy@main" in table.stdout and "MB" in table.stdout


def test_hub_id_with_revision_and_missing_repo(tmp_path, hub, hub_env):
    commit = hub.repos["org/toy"].commit
    proc = _resolve(f"org/toy@{commit}", {**hub_env, "SWIFTKIT_HUB": "hf"})
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).name == commit

    proc = run_cli("models", env={**hub_env, "SWIFTKIT_HOME": str(tmp_path / "empty")})
    assert proc.returncode == 0 and "no models cached" in proc.stderr
