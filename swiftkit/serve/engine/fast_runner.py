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
from swiftkit.serve.engine.fast_model import FastDecoder
from swiftkit.serve.engine.request import Request


def batch_buckets(max_batch: int) -> list[int]:
    return sorted({*(b for b in (1, 2, 4, 8, 16) if b < max_batch), *range(24, max_batch, 8), max_batch})


def attention_splits(sms: int, rows: int, kv_heads: int) -> int:
    """Sequence splits per (row, kv head) so that one decode step has about two programs per SM (sms=0: CPU)."""
    if not sms:
        return 1
    splits = max(1, (2 * sms) // (rows * kv_heads))
    return min(64, 1 << (splits.bit_length() - 1))


class FastRunner:
    def __init__(self, model, num_slots: int, max_model_len: int, enforce_eager: bool = False):
        self.net = FastDecoder(model, num_slots, max_model_len + 1)
        self.device = self.net.device
        self.max_model_len = max_model_len
        self.num_slots = num_slots
        # [3, max] host staging (ids, positions, slots), copied to the device in one transfer per step
        on_cuda = self.device.type == "cuda"
        self._sms = torch.cuda.get_device_properties(self.device).multi_processor_count if on_cuda else 0
        self._host = torch.zeros(3, num_slots, dtype=torch.long, pin_memory=on_cuda)
        self._static = torch.zeros(3, num_slots, dtype=torch.long, device=self.device)
        # The host→device copy is asynchronous and reads the pinned buffer when it runs: the next step may
        # only rewrite the buffer once this event says the previous copy is done.
        self._copied = torch.cuda.Event() if on_cuda else None
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.buckets = batch_buckets(num_slots)
        if on_cuda and not enforce_eager:
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
        if bucket > rows:  # padding rows: token 0 at position 0 of the scratch slot
            host[:2, rows:] = 0
            host[2, rows:] = self.net.scratch_slot
        static = self._static[:, :bucket]
        static.copy_(host, non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        if bucket in self._graphs:
            graph, logits = self._graphs[bucket]
            graph.replay()
        else:
            logits = self.net.decode(static[0], static[1], static[2],
                                     attention_splits(self._sms, bucket, self.net.kv_heads))
        for r in requests:
            r.kv_end += 1
        return logits[:rows]

    def move(self, src: int, dst: int, length: int) -> None:
        self.net.move(src, dst, length)

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
                self.net.decode(*args)  # warm-up: Triton compiles, cuBLAS picks its kernels
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    logits = self.net.decode(*args)
                pool = graph.pool()
                self._graphs[bucket] = (graph, logits)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        console.print(f"[dim]captured {len(self._graphs)} decode graphs[/]")
