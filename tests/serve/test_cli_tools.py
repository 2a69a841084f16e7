"""`swiftkit infer` (resumable), `swiftkit chat` (scripted stdin) and `swiftkit bench serve`, as users run them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT, run_cli
from tests.serve.conftest import API_KEY


def test_infer_writes_results_and_resumes(toy_model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    rows = [{"id": "a", "question": "What is 1 + 2?"}, {"id": "b", "prompt": "12 + 34 ="},
            {"messages": [{"role": "user", "content": "Hi"}]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results.jsonl"
    out.write_text(json.dumps({"id": "a", "response": "kept", "finish_reason": "stop"}) + "\n")  # a resumed run
    run_cli("infer", "--model", toy_model, "--data", data, "--output", out, "--max-tokens", "6", check=True)
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in results) == ["2", "a", "b"]
    assert results[0]["response"] == "kept"  # not redone
    for r in results[1:]:
        assert r["finish_reason"] in ("stop", "length") and 1 <= r["completion_tokens"] <= 6
    again = run_cli("infer", "--model", toy_model, "--data", data, "--output", out, check=True)
    assert "already" in again.stderr and len(out.read_text().splitlines()) == 3


def test_infer_engine_flag_picks_the_runner_and_all_answer_alike_chunked_or_not(toy_model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "question": f"What is the larger of {a} and {b}?"}) + "\n"
                            for i, (a, b) in enumerate([(12, 57), (88, 31), (40, 44), (9, 90)])))
    answers = {}
    for engine, chunk in (("fast", "256"), ("fast", "8"), ("plain", "256")):  # 8: every prompt enters in chunks
        out = tmp_path / f"{engine}-{chunk}.jsonl"
        proc = run_cli("infer", "--model", toy_model, "--data", data, "--output", out, "--max-tokens", "12",
                       "--engine", engine, "--dtype", "float32", "--max-prefill-chunk", chunk, check=True)
        assert f"engine {engine}" in " ".join(proc.stderr.split())  # the log names the runner actually used
        answers[engine, chunk] = {r["id"]: r["response"] for r in map(json.loads, out.read_text().splitlines())}
    assert answers["fast", "256"] == answers["fast", "8"] == answers["plain", "256"] and len(answers["plain", "256"]) == 4


def test_infer_bad_row_is_one_line_error(toy_model, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"nothing": 1}\n')
    proc = run_cli("infer", "--model", toy_model, "--data", data, "--output", tmp_path / "o.jsonl")
    assert proc.returncode == 2 and "needs `messages`" in proc.stderr and "Traceback" not in proc.stderr


def test_chat_streams_keeps_history_and_resets(toy_model):
    proc = subprocess.run(
        [sys.executable, "-m", "swiftkit", "chat", "--model", str(toy_model), "--max-tokens", "4", "--temperature", "0"],
        input="What is 1 + 2?\nAnd 3 + 4?\n/reset\nHi\n/exit\n", capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "conversation reset" in proc.stderr


def test_bench_serve_reports_throughput_and_latency(server, tmp_path):
    out = tmp_path / "bench.json"
    run_cli("bench", "serve", "--url", server.url, "--api-key", API_KEY, "--model", "toy", "--concurrency", "4",
            "--requests", "8", "--max-tokens", "8", "--output", out, check=True)
    result = json.loads(out.read_text())
    assert result["requests"] == 8 and result["output_tok_s"] > 0
    assert result["ttft_p50_ms"] > 0 and result["itl_p99_ms"] >= result["itl_p50_ms"] > 0


def test_serve_port_in_use_is_one_line_error(toy_model, server):
    proc = run_cli("serve", "--model", toy_model, "--port", str(server.port), timeout=120)
    assert proc.returncode == 2 and "cannot listen" in proc.stderr and "Traceback" not in proc.stderr
