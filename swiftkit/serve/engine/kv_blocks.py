"""Paged KV bookkeeping: a pool of fixed-size blocks, per-sequence block tables, automatic prefix caching.

The KV tensors themselves live in the runner (`[layers, blocks, kv_heads, block_size, head_dim]`); this
file only decides which block holds which positions. A sequence owns `req.block_table`: block j holds its
positions [j·B, (j+1)·B). Memory in use grows with live tokens, not slots × max length.

Prefix caching (nano-vllm's block manager, vLLM's "automatic prefix caching"): once a block is full (at
admission for a prompt's blocks, during decode for generated ones), it is registered under a hash of every
token up to its end (chained: the hash of block j covers block j-1's hash, so equal hashes mean equal
prefixes) and of the adapter. A new sequence whose prompt starts with registered blocks takes them
(reference count + 1) and prefills only the rest. A block whose count drops to 0 keeps its hash and stays
reusable until the pool needs it: free blocks are handed out never-cached first, then least recently
released first. The token ids are kept with the hash and compared on a hit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from swiftkit.serve.engine.request import Request


def block_hash(parent: int | None, tokens: Sequence[int], adapter: str | None) -> int:
    return hash((parent, adapter, tuple(tokens))) if parent is None else hash((parent, tuple(tokens)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.ref = [0] * num_blocks
        self.hash: list[int | None] = [None] * num_blocks
        self.tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # hash -> block id
        # Unhashed free blocks as a stack (lowest ids first, reused while warm); hashed ones in release order.
        self.empty: list[int] = list(range(num_blocks - 1, -1, -1))
        self.evictable: OrderedDict[int, None] = OrderedDict()
        # Blocks [0, high) have ever been handed out (the stack gives recycled blocks before fresh ones, and
        # fresh ones in id order): the runner zeroes a block's memory once, when `high` first passes it.
        self.high = 0
        # statistics for the bench and the log
        self.hit_tokens = 0
        self.queried_tokens = 0

    @property
    def num_free(self) -> int:
        return len(self.empty) + len(self.evictable)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # -- admission --------------------------------------------------------------------------------------
    def allocate(self, req: Request, tokens: Sequence[int], cache_upto: int, reserve: int = 0,
                 first_chunk: int | None = None, max_new: int | None = None) -> bool:
        """Blocks for `tokens` (the sequence's whole prefill); False, changing nothing, unless `reserve` blocks
        stay free afterwards. Sets req.block_table, req.block_hashes and req.kv_cached (positions reused: cached
        blocks within the first `cache_upto` tokens). `first_chunk`: the prefill is chunked and this step
        computes only that many positions after the cached ones. `max_new`: False, changing nothing, when more than
        that many positions are left to compute after the cached ones."""
        use_cache = cache_upto > 0 and self.prefix_caching
        hits = self._lookup(req, tokens, cache_upto) if use_cache else []
        if max_new is not None and len(tokens) - len(hits) * self.block_size > max_new:
            return False
        need = self.blocks_for(len(tokens)) - len(hits)
        revived = sum(1 for b in hits if self.ref[b] == 0)  # hits sitting in the free pool leave it
        if need > self.num_free - revived - reserve:
            return False
        for b in hits:
            if self.ref[b] == 0:
                del self.evictable[b]
            self.ref[b] += 1
        req.block_table = hits + [self._take() for _ in range(need)]
        req.block_hashes = [self.hash[b] for b in hits]
        req.kv_cached = len(hits) * self.block_size
        # Registered before they are computed: a request admitted later in the same step then shares them.
        # That is safe because one prefill forward writes every sequence's keys of a layer before any of
        # them attends in that layer (fast_model.prefill_paged), and a failed step resets the cache. Only
        # this step's positions, though: a later chunk's blocks are registered once written (PagedRunner.prefill).
        upto = len(tokens) if first_chunk is None else min(len(tokens), req.kv_cached + first_chunk)
        self.register(req, tokens, upto)
        if use_cache:
            self.queried_tokens += len(tokens)
            self.hit_tokens += req.kv_cached
        return True

    def _lookup(self, req: Request, tokens: Sequence[int], upto: int) -> list[int]:
        """Registered blocks that begin `tokens[:upto]`; at least the last token is always left to compute (its logits)."""
        bs, hits, parent = self.block_size, [], None
        for j in range(min(len(tokens) - 1, upto) // bs):
            chunk = tuple(tokens[j * bs:(j + 1) * bs])
            parent = block_hash(parent, chunk, req.adapter)
            b = self.cached.get(parent)
            if b is None or self.tokens[b] != chunk:
                break
            hits.append(b)
        return hits

    def _take(self) -> int:
        if self.empty:
            b = self.empty.pop()
            self.high = max(self.high, b + 1)
        else:
            b, _ = self.evictable.popitem(last=False)
            del self.cached[self.hash[b]]
            self.hash[b] = self.tokens[b] = None
        self.ref[b] = 1
        return b

    # -- decode -----------------------------------------------------------------------------------------
    def blocks_needed(self, running: Sequence[Request]) -> int:
        """New blocks the next decode step needs (a sequence whose next position starts a block)."""
        return sum(1 for r in running if r.kv_end == len(r.block_table) * self.block_size)

    def append_slots(self, running: Sequence[Request]) -> None:
        for r in running:
            if r.kv_end == len(r.block_table) * self.block_size:
                r.block_table.append(self._take())

    def grow(self, requests: Sequence[Request], positions: Sequence[int]) -> bool:
        """Blocks so that request i holds positions [0, positions[i]); False, changing nothing, if not free."""
        need = [max(0, self.blocks_for(p) - len(r.block_table)) for r, p in zip(requests, positions, strict=True)]
        if sum(need) > self.num_free:
            return False
        for r, n in zip(requests, need, strict=True):
            r.block_table.extend(self._take() for _ in range(n))
        return True

    def register(self, req: Request, tokens: Sequence[int], upto: int) -> None:
        """Register the sequence's full blocks among its first `upto` positions (`tokens`: its ids)."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        for j in range(len(req.block_hashes), upto // bs):
            chunk = tuple(tokens[j * bs:(j + 1) * bs])
            h = block_hash(req.block_hashes[-1] if req.block_hashes else None, chunk, req.adapter)
            req.block_hashes.append(h)
            b = req.block_table[j]
            if h not in self.cached and self.hash[b] is None:  # a twin computed in the same batch keeps the first
                self.cached[h], self.hash[b], self.tokens[b] = b, h, chunk

    # -- leaving ----------------------------------------------------------------------------------------
    def free(self, req: Request) -> None:
        # Tail blocks first: a shared prefix's first blocks are released last, so they are evicted last.
        for b in reversed(req.block_table):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                if self.hash[b] is None:
                    self.empty.append(b)
                else:
                    self.evictable[b] = None
        req.block_table, req.block_hashes = [], []

    def reset_prefix_cache(self) -> None:
        """Forget every registered block, in use or not (blocks in use stay with their sequences)."""
        for b in self.cached.values():
            self.hash[b] = self.tokens[b] = None
        self.cached.clear()
        self.empty.extend(self.evictable)
        self.evictable.clear()
