"""Batched forwards of a transformers causal LM over the slot KV cache: prefill and decode.

Prefill runs the new requests' prompts left-padded in one forward (so every row's last prompt token
is the last column and only one logits column is computed). Decode runs one token for every
running row. Both pass explicit position ids and a 4D additive mask, which transformers uses as
given, so rows of different lengths (and left padding kept in the cache) never leak into each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from swiftkit.console import console
from swiftkit.errors import SwiftkitError
from swiftkit.serve.engine.kv_cache import SlotKVCache
from swiftkit.serve.engine.lora import AdapterHost, stackable
from swiftkit.serve.engine.request import Request


def resolve_kv_cache(kv_cache: str, device: torch.device) -> str:
    """What `--kv-cache auto` means on a device: the slot cache on CUDA (its decode runs in CUDA graphs), paged
    elsewhere (memory follows live tokens, prefix caching)."""
    return kv_cache if kv_cache != "auto" else ("slots" if device.type == "cuda" else "paged")


def make_runner(model, num_slots: int, max_model_len: int, engine: str = "auto", multi_adapter: bool = False,
                enforce_eager: bool = False, kv_cache: str = "auto", kv_cache_memory: float | None = None,
                block_size: int = 16, prefix_caching: bool = True):
    """The fast runner where it applies (engine auto/fast), else this plain one; says which in the log.

    The fast runner's cache: `kv_cache` paged (blocks, prefix caching; the CPU default) or slots (the CUDA
    default: its Triton decode kernel and CUDA graphs read the slot cache)."""
    from swiftkit.serve.engine.fast_model import decoder_of, unsupported_reason
    from swiftkit.serve.engine.fast_runner import FastRunner, PagedRunner

    reason = "--engine plain"
    if engine in ("auto", "fast"):
        reason = unsupported_reason(decoder_of(model))
        device = next(model.parameters()).device
        paged = resolve_kv_cache(kv_cache, device) == "paged"
        if reason is None and multi_adapter and not paged and not stackable(model):
            reason = "LoRA variants (DoRA, a LoRA bias) with the slot cache: its CUDA graphs need plain LoRA stacks"
        if reason is None:
            if paged:
                blocks = pool_blocks(model, num_slots, max_model_len, block_size, kv_cache_memory)
                runner = PagedRunner(model, num_slots, max_model_len, blocks, block_size, prefix_caching, multi_adapter)
            else:
                runner = FastRunner(model, num_slots, max_model_len, enforce_eager, multi_adapter)
            console.print(f"[bold]engine[/] {runner.describe()}")
            return runner
        if engine == "fast":
            raise SwiftkitError(f"--engine fast cannot run this model: {reason}", "use --engine auto or plain")
    console.print(f"[bold]engine[/] plain (the transformers forward; fast path not used: {reason})")
    return ModelRunner(model, num_slots, max_model_len, multi_adapter)


CPU_KV_CACHE_GIB = 4.0  # the CPU pool's default ceiling (vLLM's CPU backend also defaults to 4 GiB)


def pool_blocks(model, num_slots: int, max_model_len: int, block_size: int, memory_gib: float | None) -> int:
    """Blocks of the paged pool: `memory_gib` of KV, by default what num_slots × max_model_len would take,
    capped at 4 GiB on CPU and at 90 % of free memory on CUDA. At least one full-length sequence must fit."""
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    param = next(model.parameters())
    per_block = 2 * config.num_hidden_layers * kv_heads * block_size * head_dim * param.element_size()
    per_seq = -(-(max_model_len + 1) // block_size)
    if memory_gib is None:
        if param.device.type == "cuda":
            cap = 0.9 * torch.cuda.mem_get_info(param.device)[0]
        else:
            cap = CPU_KV_CACHE_GIB * 2**30
        blocks = min(num_slots * per_seq, int(cap // per_block))
    else:
        blocks = int(memory_gib * 2**30 // per_block)
    if blocks < per_seq:
        need = per_seq * per_block / 2**30
        raise SwiftkitError(f"the KV cache holds {blocks * block_size} tokens, less than one sequence of --max-model-len "
                            f"{max_model_len}", f"give --kv-cache-memory at least {need:.2f} (GiB) or lower --max-model-len")
    return blocks


class ModelRunner(AdapterHost):
    def __init__(self, model, num_slots: int, max_model_len: int, multi_adapter: bool = False):
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.max_model_len = max_model_len
        # Left padding from a batched prefill stays in a row, so a row may need up to twice the context.
        self.kv = SlotKVCache(num_slots, 2 * max_model_len)
        self.host_adapters(model, multi_adapter)
        self._neg = torch.finfo(self.dtype).min

    def _forward(self, requests: Sequence[Request], ids, positions, mask, keep: int) -> torch.Tensor:
        extra = {}
        if self.adapters:
            # PEFT routes each row through its own LoRA (mixed-adapter batch); rows with no adapter use the base.
            extra["adapter_names"] = self.adapter_names(requests)
        out = self.model(
            input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=self.kv,
            use_cache=True, logits_to_keep=keep, **extra,
        )
        return out.logits.float()

    def prefill(self, requests: Sequence[Request], row0: int, all_logits: bool = False):
        """Fill rows [row0, row0+k) with the prompts; returns (last-token logits [k, V], all logits [k, T, V] or None)."""
        lengths = [len(r.prompt_ids) for r in requests]
        width = max(lengths)
        ids = torch.zeros(len(requests), width, dtype=torch.long)
        positions = torch.zeros(len(requests), width, dtype=torch.long)
        starts = torch.tensor([width - n for n in lengths])
        for b, (req, n) in enumerate(zip(requests, lengths, strict=True)):
            ids[b, width - n:] = torch.tensor(req.prompt_ids)
            positions[b, width - n:] = torch.arange(n)
            req.slot, req.kv_start, req.kv_end = row0 + b, width - n, width
        col = torch.arange(width)
        allowed = (col[None, None, :] <= col[None, :, None]) & (col[None, None, :] >= starts[:, None, None])
        allowed |= torch.eye(width, dtype=torch.bool)[None]  # padding queries attend to themselves: no NaN rows
        mask = torch.where(allowed, 0.0, self._neg).to(self.dtype)[:, None]
        self.kv.begin_prefill(row0, len(requests), width)
        logits = self._forward(requests, ids.to(self.device), positions.to(self.device), mask.to(self.device), 0 if all_logits else 1)
        return logits[:, -1], logits if all_logits else None

    def decode(self, requests: Sequence[Request]) -> torch.Tensor:
        """One token for each running row (row i must be requests[i]); returns logits [B, V]."""
        write = torch.tensor([r.kv_end for r in requests])
        starts = torch.tensor([r.kv_start for r in requests])
        kv_len = int(write.max()) + 1
        ids = torch.tensor([[r.last_token] for r in requests])
        positions = (write - starts)[:, None]
        col = torch.arange(kv_len)
        allowed = (col[None, :] >= starts[:, None]) & (col[None, :] <= write[:, None])
        mask = torch.where(allowed, 0.0, self._neg).to(self.dtype)[:, None, None]
        self.kv.begin_decode(len(requests), write.to(self.device), kv_len)
        logits = self._forward(requests, ids.to(self.device), positions.to(self.device), mask.to(self.device), 1)
        for r in requests:
            r.kv_end += 1
        return logits[:, -1]

    def move(self, src: int, dst: int, length: int) -> None:
        self.kv.move(src, dst, length)
