"""`swiftkit bench engine` on the CPU: every engine runs the same workload and the fast path's logits
match the transformers forward (fp32), through the real command."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_bench_engine_reports_every_engine_and_fidelity(tmp_path):
    result = tmp_path / "engine.json"
    proc = run_cli("bench", "engine", "--model-config", "toy", "--engines", "fast,plain,hf", "--concurrency", "1,4",
                   "--prompt-len", "16", "--max-tokens", "12", "--fidelity-tokens", "8", "--output", result, check=True)
    data = json.loads(result.read_text())
    runs = {(r["engine"], r["concurrency"]): r for r in data["runs"]}
    assert set(runs) == {(e, c) for e in ("fast", "plain", "hf") for c in (1, 4)}
    for (engine, n), r in runs.items():
        assert r["tokens"] == n * 12, (engine, n, r)  # ignore_eos: exactly max_tokens each
        assert r["tok_s"] > 0
    assert runs[("fast", 4)]["itl_p99_ms"] >= runs[("fast", 4)]["itl_p50_ms"] > 0
    f = data["fidelity"]
    assert f["positions"] == 4 * 8 and "fast_vs_fp32" not in f  # fp32 model: one comparison
    assert f["fast_vs_eager"]["max_abs_logit_diff"] < 1e-3 and f["fast_vs_eager"]["argmax_agreement"] == 1.0
    assert "| fast | 4 |" in proc.stdout


def test_bench_engine_rejects_unknown_engine():
    proc = run_cli("bench", "engine", "--model-config", "toy", "--engines", "fast,warp")
    assert proc.returncode == 2 and "unknown warp" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_engine_shared_prefix_and_speculative_workloads(tmp_path):
    result = tmp_path / "engine.json"
    proc = run_cli("bench", "engine", "--model-config", "toy", "--engines", "fast,fast-slots", "--concurrency", "4",
                   "--prompt-len", "8", "--max-tokens", "6", "--fidelity-tokens", "0", "--shared-prefix", "64",
                   "--speculative", "3", "--output", result, check=True)
    data = json.loads(result.read_text())
    assert {r["engine"] for r in data["runs"]} == {"fast", "fast-slots"}
    (row,) = data["shared_prefix"]
    assert row["on"]["tokens"] == row["off"]["tokens"] == 4 * 6
    # the burst computes the 64-token prefix once (4 blocks), the other three requests take it from the cache
    assert row["on"]["prefix_hit_tokens"] == 3 * 64 and row["off"]["prefix_hit_tokens"] == 0
    assert row["ttft_ratio"] > 0 and "prefix caching on vs off" in proc.stdout
    assert [r["workload"] for r in data["speculative"]] == ["repeat", "free text"]
    for spec in data["speculative"]:
        assert spec["identical"] and spec["off"]["drafted"] == 0 and spec["on"]["steps"] <= spec["off"]["steps"]


def test_bench_engine_long_prompt_workload(tmp_path):
    result = tmp_path / "engine.json"
    proc = run_cli("bench", "engine", "--model-config", "toy", "--engines", "fast", "--concurrency", "2",
                   "--prompt-len", "8", "--max-tokens", "24", "--fidelity-tokens", "0", "--long-prompt", "200",
                   "--prefill-chunk", "32", "--output", result, check=True)
    (row,) = json.loads(result.read_text())["long_prompt"]
    assert row["chunk"] == 32 and "long_ttft_ms" not in row["none"]
    assert [row[k]["preemptions"] for k in ("none", "chunked", "whole")] == [0, 0, 0]  # the pool is sized to the run
    for key in ("chunked", "whole"):
        assert row[key]["itl_p99_entering_ms"] > 0 and row[key]["long_ttft_ms"] > 0 and row[f"{key}_p99_ratio"] > 0
    assert "long prompt mid-run" in proc.stdout
