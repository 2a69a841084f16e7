"""`--backend engine` against lm-eval's HFLM (`--backend local`, same weights) per sample, on the toy."""

from __future__ import annotations

from pathlib import Path

import pytest

from swiftkit.artifacts import read_manifest
from tests.conftest import WIDE, assert_one_line_error, run_cli
from tests.eval.fidelity import assert_same_per_sample

HERE = Path(__file__).parent
LM_EVAL_BARS = ("Checking cached requests", "Running loglikelihood requests", "Running generate_until requests", "it/s]")


def task_yamls(folder: Path, data: Path) -> list[Path]:
    """The test's own task YAMLs (rolling log-likelihood), pointed at `data` (rows {question, answer})."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted((HERE / "tasks_yaml").glob("*.yaml")):
        target = folder / source.name
        target.write_text(source.read_text().replace("DATA", str(data)))
        written.append(target)
    return written


def test_engine_equals_local_per_sample_on_every_request_type(toy_model, shared_data, tmp_path):
    """MMLU (one-token choices), GSM8K 5-shot (prompts longer than the toy's context: left-truncated)
    and rolling log-likelihoods of whole documents. (The toy ends its answers after a line; long
    generations are compared on the real model, tests/real/test_real_eval.py.)"""
    yamls = task_yamls(tmp_path / "tasks", shared_data / "gsm8k" / "test_shared1019.jsonl")
    tasks = ",".join(["mmlu", "gsm8k", *map(str, yamls)])
    runs = {}
    for backend in ("engine", "local"):
        runs[backend] = tmp_path / backend
        proc = run_cli(
            "eval", "--model", toy_model, "--tasks", tasks, "--data-dir", shared_data, "--limit", "3", "--no-chat",
            "--batch-size", "4", "--backend", backend, "--output", runs[backend],
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_manifest(runs["engine"]).metrics["backend"] == "engine"
    counted = assert_same_per_sample(runs["engine"], runs["local"])
    # 11 MMLU subjects x 3 x 4 choices + 3 rolling documents; 3 GSM8K, recorded once per filter
    assert counted == {"loglikelihood": 11 * 3 * 4 + 3, "generation": 2 * 3}, counted
    scores = read_manifest(runs["engine"]).metrics["scores"]
    reference = read_manifest(runs["local"]).metrics["scores"]
    assert scores["mmlu"] == reference["mmlu"] and scores["gsm8k"] == reference["gsm8k"]
    assert scores["rolling"] == pytest.approx(reference["rolling"], rel=1e-5)  # word perplexity: exp of a sum


def test_one_progress_display_instead_of_lm_eval_bars(toy_model, tmp_path):
    proc = run_cli("eval", "--model", toy_model, "--tasks", "toy_arithmetic,toy_preference", "--limit", "4",
                   "--output", tmp_path / "eval", env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert not [bar for bar in LM_EVAL_BARS if bar in log], log
    label = toy_model.name
    # one row per request type: task, done/total, what it does and its speed
    assert f"{label}: toy_preference" in log and "8/8 scoring" in log, log
    assert f"{label}: toy_arithmetic" in log and "4/4 generating" in log, log
    assert log.count("tok/s") == 2, log


def test_generation_kwargs_the_engine_cannot_honour_are_one_line_errors(toy_model, shared_data, tmp_path):
    task = tmp_path / "beams.yaml"
    source = (HERE / "tasks_yaml" / "rolling.yaml").read_text().replace("DATA", str(shared_data / "gsm8k" / "test_shared1019.jsonl"))
    task.write_text(
        source.replace("task: rolling", "task: beams").replace("output_type: loglikelihood_rolling", "output_type: generate_until")
        + "generation_kwargs:\n  until: []\n  num_beams: 4\n"
    )
    proc = run_cli("eval", "--model", toy_model, "--tasks", str(task), "--limit", "2", "--output", tmp_path / "out", env=WIDE)
    assert_one_line_error(proc, "--backend engine does not support generation kwargs num_beams")
    assert "--backend local" in proc.stderr
