"""Score a model on the toy's held-out questions (operand pairs never seen in training)."""

from __future__ import annotations

import json
from pathlib import Path


def heldout_rows(toy: Path, n: int) -> list[dict]:
    lines = (toy / "task" / "heldout.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


def heldout_scores(model_ref: Path | str, toy: Path, n: int = 64) -> dict[str, float]:
    """Greedy exact match, and mean log-prob of the answer tokens + eos after the chat-formatted question
    (the template's own trailing tokens are left out: they say nothing about the task)."""
    import torch

    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(model_ref)
    rows = heldout_rows(toy, n)
    chats = [[{"role": "user", "content": r["question"]}] for r in rows]
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    answers = [tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in rows]
    logps = []
    with torch.no_grad():
        for prompt_ids, answer_ids in zip(encoded, answers, strict=True):
            ids = torch.tensor([prompt_ids + answer_ids])
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
            logps.append(float(torch.log_softmax(logits, -1).gather(-1, ids[0, len(prompt_ids) :, None]).sum()))
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    exact = sum(reply.strip() == r["answer"] for reply, r in zip(replies, rows, strict=True))
    return {"exact_match": exact / len(rows), "answer_logp": sum(logps) / len(logps)}
