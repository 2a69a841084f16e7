"""Shared fixtures: the toy model is built once per machine (cached by the toy's source hash)."""

from __future__ import annotations

import ast
import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_cli(
    *args: str, check: bool = False, timeout: float = 900, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run `swiftkit ARGS` as a user would (a real process), capturing output."""
    proc = subprocess.run(
        [sys.executable, "-m", "swiftkit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"swiftkit {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def toy_model() -> Path:
    """The toy model artifact (built with default settings, cached under .cache/toy-<hash>)."""
    # Keyed by the toy module's syntax tree: reformatting or comments don't force a rebuild.
    tree = ast.dump(ast.parse((ROOT / "swiftkit" / "toy.py").read_text()))
    digest = hashlib.sha256(tree.encode()).hexdigest()[:12]
    path = ROOT / ".cache" / f"toy-{digest}"
    path.parent.mkdir(exist_ok=True)
    # Several pytest processes (xdist, parallel sessions) may ask at once: one builds, the rest wait.
    with open(path.parent / f".toy-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "swiftkit.json").is_file():
            run_cli("toy", path, "--overwrite", check=True, timeout=1800)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    """`slow` tests (minutes each) run only with SWIFTKIT_SLOW=1, so the default suite stays fast."""
    if os.environ.get("SWIFTKIT_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: set SWIFTKIT_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
