"""Every stage on real weights (SmolLM2-135M-Instruct): serve, quantize, sft -> merge (eval: test_real_eval.py).

Sizes are chosen for CI on 2 CPU cores (docs/benchmarks.md has the measured times).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.serve.conftest import start_server, stop_server

pytestmark = pytest.mark.real
QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Name a primary color."]


def _greedy(model, tok, question: str, max_new_tokens: int) -> str:
    import torch

    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_serve_answers_like_in_process_greedy(smollm2, tmp_path):
    from openai import OpenAI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    server = start_server(["--model", str(smollm2), "--served-model-name", "smollm2", "--max-model-len", "512"], tmp_path / "log")
    try:
        client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=120)
        served = [
            client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": q}], max_tokens=24, temperature=0
            ).choices[0].message.content
            for q in QUESTIONS
        ]
    finally:
        stop_server(server)
    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    assert served == [_greedy(model, tok, q, 24) for q in QUESTIONS]
    assert "Paris" in served[0]


def test_gptq_keeps_wikitext_perplexity_within_bound(smollm2, shared_data, tmp_path):
    """Default group size on SmolLM2's width 576 is 64 (128 does not divide it); ppl rise bounded at 25 %."""
    out = tmp_path / "gptq"
    proc = run_cli(
        "quantize", "--model", smollm2, "--method", "gptq", "--bits", "4",
        "--data", f"{shared_data}/wikitext2/valid.txt", "--eval-data", f"{shared_data}/wikitext2/test.txt",
        "--n-samples", "16", "--max-length", "256", "--eval-tokens", "2048", "--max-ppl-increase", "0.25", "--output", out,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "swiftkit.json").read_text())
    assert manifest["quantization"]["group_size"] == 64 and manifest["quantization"]["group_size_chosen"].startswith("auto")
    ratio = manifest["metrics"]["ppl_quantized"] / manifest["metrics"]["ppl_parent"]
    assert 1.0 < ratio < 1.25, ratio
    assert '"architectures"' not in proc.stdout + proc.stderr  # the model config JSON is not dumped to the console


def test_lora_sft_lowers_heldout_loss_and_merged_model_answers(smollm2, shared_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sft = tmp_path / "sft"
    proc = run_cli(
        "sft", "--model", smollm2, "--data", f"{shared_data}/alpaca_en/alpaca_en_rows0-3251.jsonl#120",
        "--max-steps", "12", "--batch-size", "4", "--max-length", "192", "--lr", "5e-4", "--eval-split", "0.1", "--output", sft,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((sft / "swiftkit.json").read_text())["metrics"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"], metrics
    merged = tmp_path / "merged"
    proc = run_cli("merge", "--model", sft, "--output", merged)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tok = AutoTokenizer.from_pretrained(merged)
    answer = _greedy(AutoModelForCausalLM.from_pretrained(merged), tok, "What is the capital of France?", 16)
    assert "Paris" in answer, answer

    # export takes the adapter itself: merged in memory, and llama.cpp must reproduce that merged model.
    gguf = tmp_path / "gguf"
    proc = run_cli("export", "--model", sft, "--quant", "f16", "--verify-prompts", "4", "--output", gguf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exported = json.loads((gguf / "swiftkit.json").read_text())["export"]
    check = exported["files"]["f16"]["verification"]
    assert check["greedy_equal"] + check["greedy_near_ties"] == 4 and exported["merged_adapters"] == [str(sft.resolve())]
