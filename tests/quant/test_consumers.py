"""A quantized artifact is a model artifact like any other: `swiftkit serve` and `swiftkit eval` take it."""

from __future__ import annotations

import httpx

from swiftkit.artifacts import read_manifest
from tests.conftest import run_cli
from tests.quant.scoring import heldout_examples
from tests.serve.conftest import start_server, stop_server


def test_quantized_artifact_is_served_and_evaluated(quantize, toy_model, tmp_path):
    proc, out = quantize("gptq")
    assert proc.returncode == 0, proc.stderr[-4000:]

    server = start_server(["--model", str(out)], tmp_path / "serve.log")
    try:
        for statement, _answer in heldout_examples(toy_model, n=4):
            reply = httpx.post(
                f"{server.base_url}/completions",
                json={"model": str(out), "prompt": statement, "max_tokens": 4, "temperature": 0},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["text"].strip().isdigit(), (statement, reply.json())
    finally:
        stop_server(server)

    evals = tmp_path / "evals"
    run_cli("eval", "--model", out, "--tasks", "toy_arithmetic", "--limit", "4", "--output", evals, check=True)
    scored = read_manifest(evals)
    assert scored is not None and scored.kind == "eval" and scored.target == str(out)
