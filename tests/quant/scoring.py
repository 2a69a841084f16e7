"""Scoring for the quantize tests: the toy's answers to held-out operand pairs, as users would load it."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path


def heldout_examples(toy: Path, n: int = 200) -> list[tuple[str, str]]:
    """(statement, answer) pairs in the toy's pre-training phrasing, from pairs no training or calibration row has."""
    from swiftkit.toy import pretrain_example

    rng = random.Random(0)
    rows = [json.loads(line) for line in (toy / "task" / "heldout.jsonl").read_text().splitlines()[:n]]
    return [pretrain_example((row["a"], row["b"]), rng) for row in rows]


def answer_ppl(path: Path, examples: list[tuple[str, str]]) -> float:
    """exp(mean NLL of the answer tokens) of a checkpoint loaded with transformers (float32, CPU).

    Only the answers carry signal: the toy was trained on them, while its operands are random.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map="cpu").eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for statement, answer in examples:
            prompt = tokenizer(statement, add_special_tokens=False)["input_ids"]
            target = tokenizer(answer, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + target])
            labels = torch.tensor([[-100] * len(prompt) + target])
            total += model(input_ids=ids, labels=labels).loss.item() * len(target)
            count += len(target)
    return math.exp(total / count)
