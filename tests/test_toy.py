"""The toy model: loads through the Auto classes, tokenizer survives a round trip, held-out data is disjoint."""

from __future__ import annotations

import json

from swiftkit.artifacts import read_manifest


def test_toy_loads_and_round_trips(toy_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_model)
    text = "What is the larger of 37 and 45?"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert [tok.convert_ids_to_tokens(i) for i in tok("1234")["input_ids"]] == ["1", "2", "3", "4"]
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    model = AutoModelForCausalLM.from_pretrained(toy_model)
    assert model.config.hidden_size % 128 == 0
    assert model.config.hidden_size // model.config.num_attention_heads >= 64  # head_dim for vLLM CPU
    manifest = read_manifest(toy_model)
    assert manifest.serving.eos_token == "<|im_end|>" and manifest.serving.chat_template == tok.chat_template


def test_toy_learned_the_skill(toy_model):
    """Plain-text comparison on held-out pairs works after pre-training (the skill SFT builds on)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(toy_model).eval()
    rows = [json.loads(line) for line in (toy_model / "task" / "heldout.jsonl").read_text().splitlines()][:100]
    enc = tok([f"max {r['a']} {r['b']} =" for r in rows], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    answers = [t.strip().split("\n")[0] for t in tok.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)]
    accuracy = sum(a == r["answer"] for a, r in zip(answers, rows, strict=True)) / len(rows)
    assert accuracy > 0.6, accuracy  # 0.74 measured; guessing one operand scores 0.5, an untrained model 0


def test_heldout_pairs_never_in_training_data(toy_model):
    task = toy_model / "task"
    held = {frozenset((r["a"], r["b"])) for r in map(json.loads, (task / "heldout.jsonl").read_text().splitlines())}
    assert len(held) >= 200
    seen = set()
    for line in (task / "sft.jsonl").read_text().splitlines() + (task / "dpo.jsonl").read_text().splitlines():
        text = json.dumps(json.loads(line))
        numbers = [int(tok) for tok in text.replace("?", " ").replace('"', " ").split() if tok.isdigit()]
        seen.add(frozenset(numbers[:2]))
    assert not held & seen


def test_heldout_pairs_never_in_calibration_text(toy_model):
    held = {frozenset((r["a"], r["b"])) for r in map(json.loads, (toy_model / "task" / "heldout.jsonl").read_text().splitlines())}
    for line in (toy_model / "task" / "calib.txt").read_text().splitlines():
        numbers = [int(t.rstrip(":")) for t in line.split() if t.rstrip(":").isdigit()]
        assert frozenset(numbers[:2]) not in held, line
