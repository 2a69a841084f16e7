"""The fast runner: FastDecoder behind the same prefill / decode / move calls as ModelRunner.

On CUDA every decode step replays a CUDA graph captured once per batch-size bucket (1, 2, 4, 8,
16, 24, 32, ... up to max_num_seqs): inputs go into static buffers, a batch of B rows runs the
smallest bucket ≥ B with padding rows pointed at a scratch cache slot. Prefill runs eagerly (its
shapes vary; it is a few large matmuls, not launch-bound).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from swiftkit.console import console
from swiftkit.errors import SwiftkitError
from swiftkit.serve.engine.fast_model import FastDecoder, decoder_of
from swiftkit.serve.engine.kv_blocks import BlockManager
from swiftkit.serve.engine.lora import AdapterHost, stackable
from swiftkit.serve.engine.request import Request


def batch_buckets(max_batch: int) -> list[int]:
    return sorted({*(b for b in (1, 2, 4, 8, 16) if b < max_batch), *range(24, max_batch, 8), max_batch})


def attention_splits(sms: int, rows: int, kv_heads: int) -> int:
    """Sequence splits per (row, kv head) so that one decode step has about two programs per SM (sms=0: CPU)."""
    if not sms:
        return 1
    splits = max(1, (2 * sms) // (rows * kv_heads))
    return min(64, 1 << (splits.bit_length() - 1))


class FastRunner(AdapterHost):
    def __init__(self, model, num_slots: int, max_model_len: int, enforce_eager: bool = False, multi_adapter: bool = False):
        self.host_adapters(model, multi_adapter)
        self.net = FastDecoder(decoder_of(model), num_slots, max_model_len + 1)
        if multi_adapter:
            self.net.rebuild(sorted(self.adapters))
        self.device = self.net.device
        self.max_model_len = max_model_len
        self.num_slots = num_slots
        # [4, max] host staging (ids, positions, slots, adapter ids), copied to the device in one transfer per step
        on_cuda = self.device.type == "cuda"
        self._sms = torch.cuda.get_device_properties(self.device).multi_processor_count if on_cuda else 0
        self._host = torch.zeros(4, num_slots, dtype=torch.long, pin_memory=on_cuda)
        self._static = torch.zeros(4, num_slots, dtype=torch.long, device=self.device)
        # The host→device copy is asynchronous and reads the pinned buffer when it runs: the next step may
        # only rewrite the buffer once this event says the previous copy is done.
        self._copied = torch.cuda.Event() if on_cuda else None
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.buckets = batch_buckets(num_slots)
        self._graphed = on_cuda and not enforce_eager
        if self._graphed:
            self._capture()

    def describe(self) -> str:
        graphs = f"CUDA graphs for batch {self.buckets[0]}..{self.buckets[-1]}" if self._graphs else "eager"
        return f"fast ({graphs}; KV cache {self.net.cache_bytes() / 2**30:.2f} GiB for {self.num_slots} × {self.max_model_len})"

    # -- the runner interface ----------------------------------------------------------------------------
    def prefill(self, requests: Sequence[Request], row0: int, all_logits: bool = False):
        lengths = [len(r.prompt_ids) for r in requests]
        width = max(lengths)
        ids = torch.zeros(len(requests), width, dtype=torch.long)
        for b, (req, n) in enumerate(zip(requests, lengths, strict=True)):
            ids[b, :n] = torch.tensor(req.prompt_ids)
            req.slot, req.kv_start, req.kv_end = row0 + b, 0, n
        self.net.use_adapters(self.adapter_names(requests, [width] * len(requests)), decode=False)
        return self.net.prefill(ids.to(self.device), lengths, row0, all_logits)

    def decode(self, requests: Sequence[Request]) -> torch.Tensor:
        rows = len(requests)
        bucket = next((b for b in self.buckets if b >= rows), rows) if self._graphs else rows
        if self._copied is not None:
            self._copied.synchronize()
        host = self._host[:, :bucket]
        host[0, :rows] = torch.tensor([r.last_token for r in requests])
        host[1, :rows] = torch.tensor([r.kv_end for r in requests])
        host[2, :rows] = torch.tensor([r.slot for r in requests])
        names = self.adapter_names(requests)
        if names is not None:
            host[3, :rows] = torch.tensor(self.net.adapter_ids(names))
        if bucket > rows:  # padding rows: token 0 at position 0 of the scratch slot, no adapter
            host[:2, rows:] = 0
            host[2, rows:] = self.net.scratch_slot
            host[3, rows:] = 0
        static = self._static[:, :bucket]
        static.copy_(host, non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        if bucket in self._graphs:
            graph, logits = self._graphs[bucket]
            graph.replay()
        else:
            self._use_adapters(static[3])
            logits = self.net.decode(static[0], static[1], static[2],
                                     attention_splits(self._sms, bucket, self.net.kv_heads))
        for r in requests:
            r.kv_end += 1
        return logits[:rows]

    def move(self, src: int, dst: int, length: int) -> None:
        self.net.move(src, dst, length)

    def _use_adapters(self, index: torch.Tensor) -> None:
        """Decode reads each row's adapter from the static buffer (a graph replays with the rows' new ones)."""
        self.net.use_adapters(None, decode=True, index=index if self.adapters else None)

    def adapters_changed(self) -> None:
        """New stacks mean new shapes: the decoder re-reads the projections and the graphs are captured again."""
        if not stackable(decoder_of(self.model)):  # a graph replay could not give PEFT its rows' adapter names
            raise SwiftkitError("this adapter is a LoRA variant (DoRA, a LoRA bias) the slot cache's fast path cannot "
                                "batch", "serve it with --kv-cache paged or --engine plain")
        self.net.rebuild(sorted(self.adapters))
        if self._graphed:
            self._graphs.clear()
            self._capture()

    # -- CUDA graphs --------------------------------------------------------------------------------------
    def _capture(self) -> None:
        """Capture one decode step per bucket, largest first, sharing one memory pool."""
        static = self._static
        static[2].fill_(self.net.scratch_slot)
        pool = None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(stream):  # no autograd state kept alive by the graphs
            for bucket in reversed(self.buckets):
                splits = attention_splits(self._sms, bucket, self.net.kv_heads)
                args = (static[0, :bucket], static[1, :bucket], static[2, :bucket], splits)
                self._use_adapters(static[3, :bucket])
                self.net.decode(*args)  # warm-up: Triton compiles, cuBLAS picks its kernels
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    self._use_adapters(static[3, :bucket])  # the adapter masks are computed inside the graph
                    logits = self.net.decode(*args)
                pool = graph.pool()
                self._graphs[bucket] = (graph, logits)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        console.print(f"[dim]captured {len(self._graphs)} decode graphs[/]")


class PagedRunner(AdapterHost):
    """The fast forward over a paged KV pool (kv_blocks.py), with automatic prefix caching, and LoRA adapters
    (PEFT's mixed-adapter batch inside each LoRA layer; cached prefixes are keyed by adapter).

    Eager on every device. On CUDA, decode runs the Triton split-K kernel over block tables (prefill and
    chunk attention are torch's SDPA over gathered blocks); elsewhere the torch references. The CUDA default is
    still the slot cache, whose decode runs in CUDA graphs. Admission allocates a
    request's blocks (`allocate`, called by the scheduler); decode takes one more block whenever a
    sequence crosses a block boundary (`blocks_needed` tells the engine first, so it can preempt).
    """

    def __init__(self, model, num_slots: int, max_model_len: int, num_blocks: int, block_size: int,
                 prefix_caching: bool = True, multi_adapter: bool = False):
        self.host_adapters(model, multi_adapter)
        self.net = FastDecoder(decoder_of(model), num_slots, max_model_len + 1, blocks=(num_blocks, block_size))
        if multi_adapter:
            self.net.rebuild(sorted(self.adapters))
        self.device = self.net.device
        self._sms = torch.cuda.get_device_properties(self.device).multi_processor_count if self.device.type == "cuda" else 0
        self.max_model_len = max_model_len
        self.num_slots = num_slots
        self.block_size = block_size
        self.blocks = BlockManager(num_blocks, block_size, prefix_caching)
        # A sequence of max_model_len alone must always fit, or it could never finish even after preempting all.
        self.watermark = max(1, num_blocks // 100)

    def describe(self) -> str:
        per_token = self.net.cache_bytes() / (self.blocks.num_blocks + 1) / self.block_size
        cache = "prefix caching" if self.blocks.prefix_caching else "no prefix caching"
        return (f"fast, paged KV ({self.net.cache_bytes() / 2**30:.2f} GiB pool: {self.blocks.num_blocks} blocks × "
                f"{self.block_size} tokens = {self.blocks.num_blocks * self.block_size:,} tokens at "
                f"{per_token / 1024:.0f} KiB each; {cache}; "
                f"{'Triton' if self._sms else 'torch reference'} decode attention)")

    # -- the scheduler's and engine's hooks ------------------------------------------------------------------
    def allocate(self, req: Request, running: int, chunk: int | None = None, limit: int | None = None) -> bool:
        """Blocks for the request's prefill (prompt, plus its output so far if it was preempted); `chunk`: the
        positions this step computes, when the prefill is chunked; `limit`: (whole prompts) False unless at most
        that many positions are left to compute. Its prefill starts after the cached positions."""
        # prompt logprobs need the logits of every position before the first scored one: those are computed
        p = req.params
        cache_upto = len(req.token_ids) if p.prompt_logprobs is None else max(0, p.prompt_logprobs_from - 1)
        reserve = self.watermark if running else 0
        if not self.blocks.allocate(req, req.token_ids, cache_upto, reserve, chunk, limit):
            return False
        req.kv_start = 0
        req.kv_end = req.kv_cached
        return True

    def blocks_needed(self, running: Sequence[Request]) -> int:
        return self.blocks.blocks_needed(running)

    def free(self, req: Request) -> None:
        self.blocks.free(req)

    # -- the runner interface ----------------------------------------------------------------------------
    def prefill(self, work: Sequence[tuple[Request, int]], logits_from: list[int] | None = None):
        """The next n positions of each (request, n) in one flat forward: [kv_end, kv_end + n) attend to the
        positions already in the request's blocks (a prefix-cache hit, earlier chunks) and causally to each
        other. Advances kv_end and registers the blocks now full. Returns prefill_paged's (last logits, each
        request's logits from its logits_from row on)."""
        bs = self.block_size
        ids, pos, blocks, offsets, spans = [], [], [], [], []
        for req, n in work:
            start = req.kv_end
            p = torch.arange(start, start + n)
            table = torch.tensor(req.block_table)
            ids.append(torch.tensor(req.token_ids[start:start + n]))
            pos.append(p)
            blocks.append(table[p // bs])
            offsets.append(p % bs)
            # only the blocks up to this chunk's end: a long prompt's later blocks hold nothing yet
            spans.append((n, start, table[:self.blocks.blocks_for(start + n)].to(self.device)))
        self.net.zero_blocks(self.blocks.high)
        flat = [torch.cat(x).to(self.device) for x in (ids, pos, blocks, offsets)]
        self.net.use_adapters(self.adapter_names([r for r, _ in work], [n for _, n in work]), decode=False)
        logits = self.net.prefill_paged(*flat, spans, logits_from)
        for req, n in work:
            req.kv_end += n
            self.blocks.register(req, req.token_ids, req.kv_end)
        return logits

    def decode(self, requests: Sequence[Request]) -> torch.Tensor:
        bs = self.block_size
        self.blocks.append_slots(requests)
        self.net.zero_blocks(self.blocks.high)
        pos = [r.kv_end for r in requests]
        width = max(len(r.block_table) for r in requests)
        scratch = self.net.scratch_slot
        tables = torch.tensor([r.block_table + [scratch] * (width - len(r.block_table)) for r in requests])
        p = torch.tensor(pos)
        rows = torch.arange(len(requests))
        ids = torch.tensor([r.last_token for r in requests])
        dev = self.device
        self.net.use_adapters(self.adapter_names(requests), decode=True)
        logits = self.net.decode_paged(ids.to(dev), p.to(dev), tables[rows, p // bs].to(dev), (p % bs).to(dev),
                                       tables.to(dev), attention_splits(self._sms, len(requests), self.net.kv_heads))
        for r in requests:
            r.kv_end += 1
            if r.kv_end % bs == 0:
                self.blocks.register(r, r.token_ids, r.kv_end)
        return logits

    def verify(self, requests: Sequence[Request], drafts: Sequence[Sequence[int]]) -> torch.Tensor | None:
        """Speculative decoding: [last token, *draft] of every row in one forward after its cached positions.
        Returns logits [rows, 1 + longest draft, V] (row r's first 1 + len(drafts[r]) count), or None when
        the pool cannot hold the drafts (the caller decodes normally). kv_end is not advanced here."""
        bs = self.block_size
        if not self.blocks.grow(requests, [r.kv_end + 1 + len(d) for r, d in zip(requests, drafts, strict=True)]):
            return None
        self.net.zero_blocks(self.blocks.high)
        ids, pos, blocks, offsets, spans = [], [], [], [], []
        for req, draft in zip(requests, drafts, strict=True):
            p = torch.arange(req.kv_end, req.kv_end + 1 + len(draft))
            table = torch.tensor(req.block_table)
            ids.append(torch.tensor([req.last_token, *draft]))
            pos.append(p)
            blocks.append(table[p // bs])
            offsets.append(p % bs)
            spans.append((1 + len(draft), req.kv_end, table.to(self.device)))
        flat = [torch.cat(x).to(self.device) for x in (ids, pos, blocks, offsets)]
        self.net.use_adapters(self.adapter_names(requests, [1 + len(d) for d in drafts]), decode=False)
        return torch.nn.utils.rnn.pad_sequence(self.net.prefill_paged(*flat, spans, [0] * len(spans))[1], batch_first=True)

    def adapters_changed(self) -> None:
        # PEFT wraps and unwraps the projections in place: the decoder's model is the same object, re-read.
        self.net.rebuild(sorted(self.adapters))
        self.blocks.reset_prefix_cache()  # an adapter name may come back with other weights

    def register(self, req: Request) -> None:
        """Register the request's blocks filled so far (after a speculative step moved kv_end by several)."""
        self.blocks.register(req, req.token_ids, req.kv_end)

    def move(self, src: int, dst: int, length: int) -> None:
        """Rows are only indices into the running list here: block tables travel with their requests."""
