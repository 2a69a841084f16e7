"""Padding-free packing with isolated attention: the fast path of `swiftkit sft` (default on CUDA).

Conversations are packed best-fit-decreasing (TRL `packing_strategy="bfd"`) into bins of --max-length
tokens, --batch-size bins per step, and each step is flattened into one padding-free row whose position ids
restart at 0 for every conversation. transformers reads those restarts
(`masking_utils.find_packed_sequence_indices`) and builds a block-diagonal causal mask, so a conversation
never attends to another and the loss equals the per-conversation loss (tests/train/test_packing.py).
On CUDA the mask runs as FlexAttention's block-sparse kernel, which skips the blocks between conversations
instead of computing and masking them (sdpa computes the whole dense-masked square): on an H100 it was
faster than sdpa from 8192 tokens per step on Qwen2.5-1.5B and at every size on 7B (docs/benchmarks.md).
The loss needs nothing here: TRL's SFTTrainer computes it through its chunked fused LM head, which never
materialises the (tokens x vocabulary) logits.
"""

from __future__ import annotations

from typing import Any

from swiftkit.train.config import SFTConfig


def packing_enabled(cfg: SFTConfig) -> bool:
    """--packing / --no-packing when given; by default packed on CUDA, row batches elsewhere."""
    if cfg.packing is not None:
        return cfg.packing
    import torch

    return torch.cuda.is_available()


def sft_args(cfg: SFTConfig) -> dict[str, Any]:
    """TRL SFTConfig keyword arguments for packing (or for plain row batches when it is off)."""
    if not packing_enabled(cfg):
        return {"packing": False}
    import torch

    args: dict[str, Any] = {"packing": True, "packing_strategy": "bfd", "padding_free": True}
    if torch.cuda.is_available():
        # Every step padded to the same length (batch_size bins of max_length): the compiled FlexAttention
        # kernel and its block mask then compile once instead of once per step length.
        args["pad_to_multiple_of"] = cfg.batch_size * cfg.max_length
    return args


def prepare_model(cfg: SFTConfig, model: Any) -> None:
    """Switch a packed CUDA run to FlexAttention (block-sparse over the packed conversations)."""
    import torch

    if packing_enabled(cfg) and torch.cuda.is_available():
        model.set_attn_implementation("flex_attention")
