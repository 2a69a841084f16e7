"""`swiftkit bench train` on CPU: both paths run, counts are consistent, and both compute the same loss."""

from __future__ import annotations

import json
import math

from tests.conftest import run_cli

TINY = ("--padded-batch", "4", "--batch-size", "2", "--max-length", "256", "--steps", "3", "--warmup", "1")


def test_bench_train_toy_architecture(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "train", "--model-config", "toy", *TINY, "--output", out, check=True, env={"COLUMNS": "200"})
    assert "padded x4" in proc.stdout and "swiftkit 2x256 sdpa" in proc.stdout  # the rich table
    report = json.loads(out.read_text())
    padded, fast = report["results"]
    assert padded["path"] == "padded x4" and fast["notes"]["packing_strategy"] == "bfd" and fast["notes"]["padding_free"]
    for r in (padded, fast):
        assert r["tok_s"] > 0 and r["steps"] == 3 and r["peak_gib"] is None  # no GPU here
        # Random token ids: a random-init model's loss is about ln(vocab) on either path, so the chunked
        # fused LM head computes the same loss as the plain full-logits one.
        assert abs(r["loss"] - math.log(2048)) < 0.3, r
    assert report["speedup"] == fast["tok_s"] / padded["tok_s"]
    # Alpaca lengths (mean ~112): four padded rows hold about 450 real tokens; packed bins are nearly full.
    assert 150 < padded["tokens_per_step"] < 1024 and padded["padding"] > 0.1
    assert 0.9 * 2 * 256 < fast["tokens_per_step"] <= 2 * 256 and fast["padding"] == 0  # no fixed step shape on CPU
    assert report["lengths"]["rows"] == 3252 and report["lengths"]["max"] <= 256


def test_bench_train_model_dir_with_data(toy_model, tmp_path):
    out = tmp_path / "bench.json"
    data = f"{toy_model}/task/sft.jsonl#64"
    run_cli("bench", "train", "--model-config", toy_model, "--data", data, *TINY, "--output", out, check=True)
    report = json.loads(out.read_text())
    assert report["model"] == str(toy_model.resolve()) and report["lengths"]["rows"] == 64
    assert "sft.jsonl" in report["lengths"]["from"] and 10 < report["lengths"]["mean"] < 256
    padded, fast = report["results"]
    # The toy's own weights on the same random ids: both paths see the same loss level.
    assert abs(padded["loss"] - fast["loss"]) < 0.1 * padded["loss"], (padded, fast)


def test_bench_train_data_without_tokenizer_is_a_clear_error(toy_model, tmp_path):
    proc = run_cli("bench", "train", "--model-config", "qwen2.5-1.5b", "--data", f"{toy_model}/task/sft.jsonl#4")
    assert proc.returncode == 2 and "--data needs a tokenizer" in proc.stderr and "Traceback" not in proc.stderr
