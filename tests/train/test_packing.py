"""Padding-free packing: a packed batch trains exactly like its conversations run one by one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.train.conftest import manifest


@pytest.fixture(scope="module")
def toy(toy_model: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_model)
    model = AutoModelForCausalLM.from_pretrained(toy_model, dtype=torch.float32, attn_implementation="sdpa").eval()
    rows = [json.loads(line) for line in (toy_model / "task" / "sft.jsonl").read_text().splitlines()[:8]]
    seqs = [tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False))["input_ids"] for r in rows]
    return model, tokenizer, seqs


def packed_batch(tokenizer, seqs: list[list[int]]) -> dict[str, torch.Tensor]:
    """The batch swiftkit sft trains on when packing: TRL's padding-free collator (padded to a fixed
    multiple, as on CUDA)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True, pad_to_multiple_of=64)
    return collate([{"input_ids": ids} for ids in seqs])


def packed_logits(model, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    # use_cache=False as in TRL's fused LM-head forward (every sft step): transformers only reads packed
    # sequences from the position ids when no KV cache is built.
    return model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0]


def nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum")


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def test_packed_loss_and_gradients_equal_one_by_one(toy):
    model, tokenizer, seqs = toy
    batch = packed_batch(tokenizer, seqs)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one row, no padding mask
    assert batch["input_ids"].shape[1] % 64 == 0 and batch["input_ids"].shape[1] > sum(map(len, seqs))

    packed = nll_sum(packed_logits(model, batch["input_ids"], batch["position_ids"]), batch["labels"][0])
    packed.backward()
    packed_grads = grads(model)

    alone = sum(nll_sum(model(input_ids=torch.tensor([ids])).logits[0], torch.tensor(ids)) for ids in seqs)
    alone.backward()
    alone_grads = grads(model)

    tokens = sum(len(ids) - 1 for ids in seqs)  # each conversation's first token has no prediction
    assert int((batch["labels"] != -100).sum()) == tokens
    torch.testing.assert_close(packed / tokens, alone / tokens, rtol=1e-5, atol=1e-6)
    assert packed_grads.keys() == alone_grads.keys()
    for name, grad in packed_grads.items():
        # Relative to the whole gradient: float32 sums taken in another order differ near 1e-7 of it.
        ref = alone_grads[name]
        assert float((grad - ref).norm() / ref.norm()) < 1e-5, name


def test_without_restarting_positions_conversations_see_each_other(toy):
    # The control that gives the test above its teeth: the same row read as one long sequence differs.
    model, tokenizer, seqs = toy
    batch = packed_batch(tokenizer, seqs)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        isolated = nll_sum(packed_logits(model, batch["input_ids"], batch["position_ids"]), batch["labels"][0])
        leaked = nll_sum(packed_logits(model, batch["input_ids"], torch.arange(width)[None]), batch["labels"][0])
    assert abs(float(isolated - leaked)) > 1e-3 * float(isolated)


def test_sft_with_packing_learns(toy_model, tmp_path):
    out = tmp_path / "packed"
    run_cli(
        "sft",
        "--model",
        toy_model,
        "--data",
        f"{toy_model}/task/sft.jsonl#400",
        "--packing",
        "--max-length",
        "128",
        "--batch-size",
        "2",
        "--max-steps",
        "20",
        "--lr",
        "3e-3",
        "--eval-split",
        "0.1",
        "--output",
        out,
        check=True,
    )
    m = manifest(out)
    assert m["config"]["packing"] is True
    assert m["metrics"]["eval_loss_after"] < 0.7 * m["metrics"]["eval_loss_before"], m["metrics"]


def test_default_batch_size_is_a_token_budget_when_packing_on_cuda(monkeypatch):
    from swiftkit.train import packing
    from swiftkit.train.config import SFTConfig

    cfg = SFTConfig(model="m", data=["d"])
    assert packing.batch_size(cfg) == 4  # rows, on this CPU machine
    assert packing.batch_size(cfg.model_copy(update={"batch_size": 3})) == 3
    # The CUDA branch decides from the flags alone (no device is touched), so it is checked here too.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert packing.batch_size(cfg) == 8  # 8 bins x 1024 = 8192 tokens a step
    assert packing.batch_size(cfg.model_copy(update={"max_length": 2048})) == 4
    assert packing.batch_size(cfg.model_copy(update={"max_length": 16384})) == 1
    assert packing.batch_size(cfg.model_copy(update={"packing": False})) == 4
    assert packing.sft_args(cfg.model_copy(update={"batch_size": 8}))["pad_to_multiple_of"] == 8192
