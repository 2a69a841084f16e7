"""`swiftkit bench eval`: the same rows through two backends in one run, the first the baseline (toy, CPU)."""

from __future__ import annotations

import json

from tests.conftest import WIDE, run_cli


def test_bench_eval_compares_backends_on_the_same_rows(toy_model, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "eval", "--model", toy_model, "--tasks", "toy_arithmetic", "--limit", "6", "--backends",
                   "hf,engine", "--batch-size", "4", "--baseline-batch-size", "2", "--output", out, env=WIDE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backend"], r["batch_size"]) for r in rows] == [("hf", 2), ("engine", 4)]
    hf, engine = rows
    assert engine["agreement"]["generations_equal"] == engine["agreement"]["generations"] > 0  # fp32: identical
    assert engine["scores"] == hf["scores"]
    assert "| hf | 2 |" in proc.stdout and "| engine | 4 |" in proc.stdout
