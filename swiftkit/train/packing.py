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

ROWS_PER_STEP = 4
# Packed CUDA steps default to this many tokens (8 bins of the default --max-length 1024). 4096-token steps
# leave an H100 launch-bound: through `swiftkit sft` on Qwen2.5-1.5B, 8192 tokens took 0.46 s a step against
# 0.42 s for 4096 (17.2k vs 9.6k steady tokens/s) for 1 GiB more peak memory (docs/benchmarks.md).
TOKENS_PER_STEP = 8192


def packing_enabled(cfg: SFTConfig) -> bool:
    """--packing / --no-packing when given; by default packed on CUDA, row batches elsewhere."""
    if cfg.packing is not None:
        return cfg.packing
    import torch

    return torch.cuda.is_available()


def batch_size(cfg: SFTConfig) -> int:
    """--batch-size when given; by default bins for TOKENS_PER_STEP tokens when packing on CUDA, else 4 rows."""
    if cfg.batch_size is not None:
        return cfg.batch_size
    import torch

    if packing_enabled(cfg) and torch.cuda.is_available():
        return max(1, TOKENS_PER_STEP // cfg.max_length)
    return ROWS_PER_STEP


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
