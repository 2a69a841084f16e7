"""Log-probabilities of completions under a model, tokenized exactly as TRL's DPOTrainer does."""

from __future__ import annotations

from typing import Any

Messages = list[dict[str, Any]]


def _ids(tokenizer, messages: Messages, **kwargs) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def completion_logps(model, tokenizer, prompts: list[Messages], completions: list[Messages], batch_size: int = 16) -> list[float]:
    """Sum of log p(completion tokens | prompt) per row; the completion starts where the rendered prompt
    (with generation prompt) stops being a prefix of the rendered conversation, as in TRL."""
    import torch

    sequences = []
    for prompt, completion in zip(prompts, completions, strict=True):
        head = _ids(tokenizer, prompt, add_generation_prompt=True)
        full = _ids(tokenizer, prompt + completion)
        pairs = enumerate(zip(head, full, strict=False))
        start = next((i for i, (a, b) in pairs if a != b), min(len(head), len(full)))
        sequences.append((full, start))
    device = next(model.parameters()).device
    scores: list[float] = []
    pad = tokenizer.pad_token_id or 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(sequences), batch_size):
            chunk = sequences[i : i + batch_size]
            width = max(len(s) for s, _ in chunk)
            ids = torch.tensor([s + [pad] * (width - len(s)) for s, _ in chunk], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in chunk], device=device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            for row, (seq, start) in enumerate(chunk):
                scores.append(float(logps[row, start - 1 : len(seq) - 1].sum()))
    model.train(was_training)
    return scores


def preference_scores(model, tokenizer, rows: list[dict[str, Messages]]) -> dict[str, float]:
    """The model's own preference on held-out pairs: share with logp(chosen) > logp(rejected), mean margin."""
    prompts = [r["prompt"] for r in rows]
    chosen = completion_logps(model, tokenizer, prompts, [r["chosen"] for r in rows])
    rejected = completion_logps(model, tokenizer, prompts, [r["rejected"] for r in rows])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "accuracy": sum(m > 0 for m in margins) / len(margins),
        "margin": sum(margins) / len(margins),
        "chosen_logp": sum(chosen) / len(chosen),
    }
