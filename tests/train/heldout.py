"""Score a model on the toy's held-out arithmetic questions (operand pairs never seen in training)."""

from __future__ import annotations

import json
from pathlib import Path


def heldout_rows(toy: Path, n: int) -> list[dict]:
    lines = (toy / "task" / "heldout.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


def heldout_scores(model_ref: Path | str, toy: Path, n: int = 64) -> dict[str, float]:
    """Greedy exact match and mean log-prob of the correct answer, under the chat template."""
    import torch

    from swiftkit.loading import load_model
    from swiftkit.train.scoring import completion_logps

    model, tokenizer, _ = load_model(model_ref)
    rows = heldout_rows(toy, n)
    prompts = [[{"role": "user", "content": r["question"]}] for r in rows]
    answers = [[{"role": "assistant", "content": r["answer"]}] for r in rows]
    logps = completion_logps(model, tokenizer, prompts, answers)
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    exact = sum(reply.strip() == r["answer"] for reply, r in zip(replies, rows, strict=True))
    return {"exact_match": exact / len(rows), "answer_logp": sum(logps) / len(logps)}
