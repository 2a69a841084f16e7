"""GGUF / Ollama export of the real SmolLM2, loaded back by llama.cpp (llama-cpp-python) and scored."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.real
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def exported(smollm2, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "smol"
    proc = run_cli("export", "--model", smollm2, "--quant", "f16", "--quant", "q4_k_m", "--format", "ollama", "--output", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stderr


def test_export_manifest_records_agreement(exported):
    out, log = exported
    manifest = json.loads((out / "swiftkit.json").read_text())
    assert manifest["kind"] == "export"
    files = manifest["export"]["files"]
    assert set(files) == {"f16", "q4_k_m"}
    f16, q4 = files["f16"]["verification"], files["q4_k_m"]["verification"]
    # f16 of a float32 model: every prompt tokenizes alike and keeps its greedy tokens.
    assert f16["greedy_equal"] + f16["greedy_near_ties"] == f16["prompts"] == 8
    assert f16["tokenization_equal"] == 8 and f16["chat_template_kept"] and f16["eos_kept"]
    assert f16["max_abs_logprob_delta"] < 0.05
    assert abs(f16["ppl"] / f16["ppl_reference"] - 1) < 0.01
    # q4_k_m costs perplexity, and costs more than f16 does.
    assert q4["ppl"] > f16["ppl"] and q4["tokenization_equal"] == 8
    assert "greedy =" in log and "passed" in log


def test_llama_cpp_reproduces_transformers_greedy(exported, smollm2):
    """Independently of export's own check: free-running greedy generation in llama.cpp vs transformers."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = exported
    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    text = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hf = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids) :].tolist()
    for name in ("smol-f16.gguf", "smol-q4_k_m.gguf"):
        llm = Llama(model_path=str(out / name), n_ctx=256, verbose=False, n_threads=1)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        got = []
        for token in llm.generate(ids, top_k=1, temp=0.0):
            got.append(token)
            if token == llm.token_eos() or len(got) == len(hf):
                break
        if name.endswith("f16.gguf"):
            assert got == hf, (tok.decode(got), tok.decode(hf))
        assert "<|im_end|>" in llm.metadata["tokenizer.chat_template"]
        llm.close()
    assert "Paris" in tok.decode(hf)


def test_ollama_modelfile(exported):
    out, _ = exported
    text = (out / "Modelfile").read_text()
    assert "FROM ./smol-f16.gguf" in text and (out / "smol-f16.gguf").is_file()
    assert "<|im_start|>{{ .Role }}" in text  # ChatML in Ollama's template syntax
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text  # the template's default system prompt


def test_failed_export_leaves_no_artifact(toy_model, tmp_path):
    """The toy's home-trained tokenizer is unknown to llama.cpp: one line, exit 2, nothing at --output."""
    out = tmp_path / "toy"
    proc = run_cli("export", "--model", toy_model, "--quant", "f16", "--output", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pre-tokenizer" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    proc = run_cli("export", "--model", toy_model, "--quant", "q9_z", "--output", out)
    assert proc.returncode == 2 and "unknown --quant q9_z" in proc.stderr
