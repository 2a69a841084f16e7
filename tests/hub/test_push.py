"""`swiftkit push`: dry run, model card, token/permission errors, and a real upload to the fake hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from swiftkit.artifacts import Manifest, write_manifest
from tests.conftest import run_cli


@pytest.fixture
def tuned(tmp_path: Path, hub) -> Path:
    """A base as `swiftkit download` records it, a model trained from it (data, config), and its eval."""
    runs = tmp_path / "runs"
    base = runs / "base"
    base.mkdir(parents=True)
    files = {
        n: d for n, d in hub.repos["org/toy"].files.items() if n.endswith((".json", ".jinja", ".safetensors"))
    }
    for name, data in files.items():
        (base / name).write_bytes(data)
    write_manifest(
        base,
        Manifest(
            kind="model",
            stage="download",
            parents=["org/toy@c0ffee"],
            source={
                "hub": "hf",
                "id": "org/toy",
                "revision": "main",
                "commit": "c0ffee",
                "files": {},
                "verification": {"passed": True},
            },
        ),
    )
    tuned = runs / "tuned"
    shutil.copytree(base, tuned)
    write_manifest(
        tuned,
        Manifest(
            kind="model",
            stage="sft",
            parents=[str(base)],
            config={"lr": 2e-4, "method": "full", "output": "/home/me/secret/path"},
            data={"sources": ["/home/me/data/sft.jsonl"], "rows": 100, "fingerprint": "f1ng3rpr1nt"},
            metrics={"train_loss": 1.25},
        ),
    )
    scored = runs / "eval-tuned"
    scored.mkdir()
    (scored / "results.json").write_text("{}")
    write_manifest(
        scored,
        Manifest(kind="eval", stage="eval", target=str(tuned), metrics={"scores": {"arith_acc": 0.75}}),
    )
    return tuned


def test_dry_run_lists_exactly_what_would_be_uploaded_with_a_card(tuned, hub, hub_env):
    hub.requests.clear()
    proc = run_cli("push", tuned, "org/tuned", "--dry-run", env=hub_env)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[1] for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    expected = sorted(p.name for p in tuned.iterdir() if p.name != "swiftkit.json")
    assert listed == [*expected, "README.md"]
    card = proc.stdout
    assert "base_model: org/toy" in card and "f1ng3rpr1nt" in card and "rows: 100" in card
    assert "| eval-tuned | arith_acc | 0.75 |" in card and "lr: 0.0002" in card
    assert "/home/me" not in card  # local paths stay local
    assert hub.requests == []  # a dry run talks to nobody


def test_push_uploads_through_the_client_and_downloads_back_identical(tuned, hub, hub_env, tmp_path):
    proc = run_cli("push", tuned, "org/tuned", "--token", "hf_good_token", "--private", env=hub_env)
    assert proc.returncode == 0, proc.stderr
    assert hub.created == [{"name": "tuned", "organization": "org", "visibility": "private", "type": "model"}]
    repo = hub.repos["org/tuned"]
    assert set(repo.files) == {p.name for p in tuned.iterdir() if p.name != "swiftkit.json"} | {"README.md"}
    assert repo.files["model.safetensors"] == (tuned / "model.safetensors").read_bytes()

    back = tmp_path / "back"
    proc = run_cli("download", "org/tuned", "--output", back, "--token", "hf_good_token", env=hub_env)
    assert proc.returncode == 0, proc.stderr
    assert (back / "model.safetensors").read_bytes() == (tuned / "model.safetensors").read_bytes()
    assert "f1ng3rpr1nt" in (back / "README.md").read_text()


def test_push_needs_a_valid_token_with_write_access(tuned, hub, hub_env):
    hub.requests.clear()
    proc = run_cli("push", tuned, "org/tuned", env=hub_env)
    assert proc.returncode == 2
    assert "needs a write token" in proc.stderr and "--dry-run" in proc.stderr
    assert hub.requests == []  # refused before any network call

    proc = run_cli("push", tuned, "org/tuned", "--token", "hf_wrong", env=hub_env)
    assert proc.returncode == 2
    assert "rejected the token (HTTP 401)" in proc.stderr

    hub.faults.create_repo_status = 403
    proc = run_cli("push", tuned, "other-org/tuned", "--token", "hf_good_token", env=hub_env)
    assert proc.returncode == 2
    assert "no permission to write other-org/tuned" in proc.stderr and "Traceback" not in proc.stderr


def test_push_refuses_an_artifact_whose_verification_failed(tuned, hub, hub_env):
    manifest = json.loads((tuned / "swiftkit.json").read_text())
    manifest["quantization"] = {
        "method": "gptq",
        "bits": 4,
        "verification": {"passed": False, "ppl_ratio": 3.1},
    }
    (tuned / "swiftkit.json").write_text(json.dumps(manifest))
    hub.requests.clear()
    proc = run_cli("push", tuned, "org/tuned", "--token", "hf_good_token", env=hub_env)
    assert proc.returncode == 2
    assert "refusing to publish" in proc.stderr and "quantization verification failed" in proc.stderr
    assert hub.requests == []
