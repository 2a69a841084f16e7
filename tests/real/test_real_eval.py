"""`swiftkit eval` on real weights (SmolLM2-135M-Instruct, fp32, CPU): the engine backend equals
lm-eval's own `hf` backend per sample on MMLU and GSM8K slices from ../shared/data."""

from __future__ import annotations

import pytest

from swiftkit.artifacts import read_manifest
from tests.conftest import run_cli
from tests.eval.fidelity import assert_same_per_sample, samples

pytestmark = pytest.mark.real


def test_eval_engine_backend_equals_lm_eval_hf_per_sample(smollm2, shared_data, tmp_path):
    runs = {}
    for backend in ("engine", "hf"):
        runs[backend] = tmp_path / backend
        proc = run_cli(
            "eval", "--model", smollm2, "--tasks", "mmlu,gsm8k", "--data-dir", shared_data, "--limit", "2",
            "--max-gen-toks", "96", "--no-chat", "--backend", backend, "--output", runs[backend],
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    counted = assert_same_per_sample(runs["engine"], runs["hf"])
    # 11 subjects x 2 questions x 4 choices; 2 GSM8K 5-shot generations, recorded once per filter
    assert counted == {"loglikelihood": 11 * 2 * 4, "generation": 2 * 2}, counted
    generated = [row["resps"][0][0] for row in samples(runs["engine"])["gsm8k"]]
    assert all(len(text) > 40 for text in generated), generated  # real multi-line answers, not an early stop
    assert read_manifest(runs["engine"]).metrics["scores"] == read_manifest(runs["hf"]).metrics["scores"]
