"""`swiftkit eval` / `swiftkit compare` driven as a user would, on the toy model and ../shared/data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from swiftkit.artifacts import read_manifest
from tests.conftest import run_cli


def _samples(artifact: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (artifact / "samples" / f"{task}.jsonl").read_text().splitlines()]


def _single_eval(folder: Path) -> Path:
    found = [p for p in folder.iterdir() if p.name.startswith("eval-") and (p / "swiftkit.json").is_file()]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def toy_copies(toy_model: Path, tmp_path_factory) -> tuple[Path, Path]:
    """Two copies of the toy in a scratch folder, so evals written beside them stay out of .cache/."""
    root = tmp_path_factory.mktemp("models")
    return shutil.copytree(toy_model, root / "base"), shutil.copytree(toy_model, root / "twin")


def test_toy_tasks_write_an_eval_artifact_beside_the_model(toy_copies):
    base, _ = toy_copies
    files_before = sorted(p.relative_to(base) for p in base.rglob("*"))
    proc = run_cli("eval", "--model", base, "--tasks", "toy_arithmetic,toy_preference", "--limit", "24")
    assert proc.returncode == 0, proc.stderr
    artifact = _single_eval(base.parent)
    manifest = read_manifest(artifact)
    assert manifest.kind == "eval" and manifest.stage == "eval" and Path(manifest.target) == base.resolve()
    assert set(manifest.metrics["scores"]) == {"toy_arithmetic", "toy_preference"}
    assert manifest.metrics["chat"] is True  # the toy carries a chat template, so it is applied by default
    assert sorted(p.relative_to(base) for p in base.rglob("*")) == files_before  # model artifact untouched

    # Arithmetic: chat-formatted greedy generation, scored by exact match of the whole answer.
    arithmetic = _samples(artifact, "toy_arithmetic")
    assert len(arithmetic) == 24
    assert arithmetic[0]["arguments"][0][0].startswith("<|im_start|>user\nWhat is ")
    exact = sum(s["filtered_resps"][0] == str(s["target"]) for s in arithmetic) / len(arithmetic)
    assert manifest.metrics["scores"]["toy_arithmetic"] == pytest.approx(exact)

    # Preference: win rate and margin recomputed from the per-sample logprobs of chosen vs rejected.
    preference = _samples(artifact, "toy_preference")
    margins = [s["filtered_resps"][0][0] - s["filtered_resps"][1][0] for s in preference]
    assert preference[0]["arguments"][0][1].endswith("<|im_end|>")  # the answer's end of turn is scored too
    assert manifest.metrics["scores"]["toy_preference"] == pytest.approx(sum(m > 0 for m in margins) / len(margins))
    results = json.loads((artifact / "results.json").read_text())
    assert results["lm_eval"]["results"]["toy_preference"]["margin,none"] == pytest.approx(sum(margins) / len(margins))

    info = run_cli("info", base, "--json-output")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)[0]["evals"] == [str(artifact.resolve())]


def test_several_models_side_by_side_compare_and_fail_under(toy_copies, tmp_path):
    base, twin = toy_copies
    out = tmp_path / "evals"
    proc = run_cli(
        "eval",
        "--model",
        base,
        "--model",
        twin,
        "--tasks",
        "toy_preference",
        "--limit",
        "16",
        "--output",
        out,
        "--fail-under",
        "toy_preference=1.01",
    )
    assert proc.returncode == 2, proc.stderr  # the gate fails, after both artifacts were written
    assert "--fail-under" in proc.stderr and "toy_preference" in proc.stderr
    assert "delta to the first" in proc.stdout
    first, second = read_manifest(out / "base"), read_manifest(out / "twin")
    assert Path(first.target) == base.resolve() and Path(second.target) == twin.resolve()
    assert first.metrics["scores"] == second.metrics["scores"]  # same weights, same scores

    ok = run_cli("compare", out / "base", out / "twin", "--max-drop", "0", "--fail-under", "toy_preference=0.0")
    assert ok.returncode == 0, ok.stderr
    assert "toy_preference" in ok.stdout and "+0.0000" in ok.stdout
    gate = run_cli("compare", out / "base", "--fail-under", "toy_preference=1.01")
    assert gate.returncode == 2 and "toy_preference" in gate.stderr


def test_mmlu_and_gsm8k_from_shared_data(toy_model, shared_data, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli(
        "eval",
        "--model",
        toy_model,
        "--tasks",
        "mmlu,gsm8k",
        "--data-dir",
        shared_data,
        "--limit",
        "2",
        "--no-chat",
        "--max-gen-toks",
        "16",
        "--output",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = read_manifest(out)
    assert set(manifest.metrics["scores"]) == {"mmlu", "gsm8k"}
    subjects = sorted(p.stem for p in (out / "samples").glob("mmlu_*.jsonl"))
    assert len(subjects) == 11  # every subject of the local copy, as lm-eval's own per-subject tasks
    # The export layout's numeric answer maps to lm-eval's choice index; the prompt is lm-eval's.
    anatomy = _samples(out, "mmlu_anatomy")[0]
    assert anatomy["doc"]["choices"][2] == "paralysis of the facial muscles, loss of taste and lacrimation."
    assert anatomy["target"] == 0  # the CSV's answer column
    assert "The following are multiple choice questions (with answers) about anatomy." in anatomy["arguments"][0][0]
    assert anatomy["arguments"][0][0].endswith("Answer:") and [a[1] for a in anatomy["arguments"]] == [
        " A",
        " B",
        " C",
        " D",
    ]
    _assert_loglikelihoods_match_transformers(toy_model, anatomy)
    gsm = _samples(out, "gsm8k")[0]
    assert gsm["arguments"][0][0].count("Question:") == 6  # lm-eval's default 5-shot from the train file
    assert gsm["arguments"][0][1]["max_gen_toks"] == 16
    # The whole task set is kept in the artifact for a plain `lm_eval --include_path` re-run.
    assert str(out) in (out / "tasks" / "gsm8k.yaml").read_text()


def _assert_loglikelihoods_match_transformers(model_dir: Path, sample: dict) -> None:
    """Each choice's recorded log-likelihood equals a plain transformers forward of context + choice."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for (context, continuation), resp in zip(sample["arguments"], sample["resps"], strict=True):
        context_ids = tokenizer(context, add_special_tokens=False).input_ids
        whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = model(torch.tensor([whole])).logits[0].log_softmax(-1)
        expected = sum(logprobs[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole)))
        assert resp[0][0] == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_endpoint_backend_against_swiftkit_serve_matches_local(toy_model, tmp_path):
    """Same per-choice log-likelihoods through `swiftkit serve` (/v1/completions echo + logprobs)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "swiftkit", "serve", "--model", str(toy_model), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "swiftkit serve exited"
                time.sleep(0.5)
        served = run_cli(
            "eval",
            "--url",
            url,
            "--tokenizer",
            toy_model,
            "--tasks",
            "toy_preference,toy_arithmetic",
            "--limit",
            "12",
            "--output",
            tmp_path / "served",
        )
        assert served.returncode == 0, served.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    local = run_cli(
        "eval", "--model", toy_model, "--tasks", "toy_preference,toy_arithmetic", "--limit", "12", "--output", tmp_path / "local"
    )
    assert local.returncode == 0, local.stderr
    for a, b in zip(_samples(tmp_path / "served", "toy_preference"), _samples(tmp_path / "local", "toy_preference"), strict=True):
        assert a["arguments"] == b["arguments"]
        for x, y in zip(a["resps"], b["resps"], strict=True):
            assert x[0][0] == pytest.approx(y[0][0], abs=1e-4)
    served_gen = [s["resps"] for s in _samples(tmp_path / "served", "toy_arithmetic")]
    assert served_gen == [s["resps"] for s in _samples(tmp_path / "local", "toy_arithmetic")]
