"""SIGTERM drains: in-flight streams finish, new requests get 503, then the process exits cleanly."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import start_server, stop_server


def tiny_encoder(toy_model: Path, out: Path) -> Path:
    """A small BERT with the toy's tokenizer: stands in for a sentence-transformers encoder offline."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(toy_model)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def mean_pooled(encoder: Path, text: str) -> list[float]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(encoder), AutoModel.from_pretrained(encoder).eval()
    with torch.inference_mode():
        hidden = model(**tok(text, return_tensors="pt")).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden.mean(0), dim=-1).tolist()


@pytest.mark.parametrize("mode", ["--engine-process", "--no-engine-process"])
def test_sigterm_drains_then_exits(toy_model, tmp_path, mode):
    """Also the one test of the engine on a thread of the server (the others use the default process),
    and of --embedding-model."""
    encoder = tiny_encoder(toy_model, tmp_path / "encoder")
    expected_embedding = mean_pooled(encoder, "the sum")
    server = start_server(["--model", str(toy_model), "--dtype", "float32", "--served-model-name", "toy",
                           "--max-model-len", "1024", "--max-num-seqs", "1", mode, "--embedding-model", str(encoder)],
                          tmp_path / "server.log")
    try:
        both = httpx.post(server.base_url + "/completions", timeout=30, json={
            "model": "toy", "prompt": "the", "max_tokens": 5, "n": 2, "temperature": 0, "ignore_eos": True})
        assert [c["finish_reason"] for c in both.json()["choices"]] == ["length", "length"]
        emb = httpx.post(server.base_url + "/embeddings", json={"model": str(encoder), "input": "the sum"}, timeout=30)
        assert emb.json()["data"][0]["embedding"] == pytest.approx(expected_embedding, abs=1e-5)

        # One slot and three long streams: two wait in the queue, so the drain outlasts the checks below
        # however fast the engine is.
        body = {"model": "toy", "prompt": "1 + 2 =", "max_tokens": 900, "ignore_eos": True, "stream": True}
        streams: list[list[dict]] = [[], [], []]
        accepted = threading.Barrier(len(streams) + 1)  # every stream's response has begun: all three are in flight

        def stream(chunks: list[dict]) -> None:
            with httpx.stream("POST", server.base_url + "/completions", json=body, timeout=120) as r:
                accepted.wait(30)
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        chunks.append(json.loads(line[6:]))

        readers = [threading.Thread(target=stream, args=(chunks,)) for chunks in streams]
        for reader in readers:
            reader.start()
        accepted.wait(30)
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/health").status_code != 503:
            assert time.monotonic() < deadline, "SIGTERM did not start draining"
            time.sleep(0.01)
        r = httpx.post(server.base_url + "/completions", json={**body, "stream": False}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        for reader in readers:
            reader.join(120)
        assert [chunks[-1]["choices"][0]["finish_reason"] for chunks in streams] == ["length"] * 3  # all completed
        assert server.proc.wait(30) == 0
    finally:
        stop_server(server)
