"""GGUF import on the real SmolLM2: the artifact is exactly what transformers reads from the GGUF."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.real


def test_import_equals_transformers_gguf_load(smollm2, smollm2_gguf):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = json.loads((smollm2 / "swiftkit.json").read_text())
    assert manifest["stage"] == "import" and manifest["kind"] == "model"
    source = manifest["source"]
    assert source["sha256"] == hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert (source["format"], source["quant_type"], source["dequantized"], source["dtype"]) == ("gguf", "Q4_1", True, "float32")
    assert source["tensor_types"]["Q4_1"] > 200
    # Tokenizer and template come from the GGUF metadata: ChatML with <|im_end|> as eos.
    serving = manifest["serving"]
    assert "<|im_start|>" in serving["chat_template"] and serving["eos_token"] == "<|im_end|>"
    assert serving["eos_token_ids"] == [2]

    ours = AutoModelForCausalLM.from_pretrained(smollm2)
    theirs = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(smollm2)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        a, b = ours(ids).logits, theirs(ids).logits
        # float32 holds the dequantized values exactly, so the saved artifact is bit-equal.
        assert torch.equal(a, b)
        answer = tok.decode(ours.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_gguf_file_is_a_model_reference(smollm2_gguf, tmp_path):
    """`--model FILE.gguf` works in any stage: here `info` and a one-prompt `infer` through the engine."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"}]}) + "\n")
    out = tmp_path / "answers.jsonl"
    proc = run_cli("infer", "--model", smollm2_gguf, "--data", prompts, "--output", out, "--max-tokens", "12", "--temperature", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Paris" in out.read_text()


def test_unsupported_gguf_architecture_is_one_line(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "fake.gguf"
    writer = gguf.GGUFWriter(str(path), "warpdrive9")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    proc = run_cli("import", path, "--output", tmp_path / "out")
    assert proc.returncode == 2
    assert "GGUF architecture 'warpdrive9'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()

    garbage = tmp_path / "not.gguf"
    garbage.write_bytes(b"definitely not gguf" * 10)
    proc = run_cli("import", garbage, "--output", tmp_path / "out2")
    assert proc.returncode == 2 and "not a readable GGUF file" in proc.stderr
