"""A slot KV cache: one preallocated row per running sequence, shared by every decode step.

Running sequences occupy rows 0..B-1 (the scheduler keeps them compact by moving the last row into
a hole when a sequence leaves), so a decode step attends over a *view* `store[:B, :, :L]` with no
copy, and writes each row's new key at that row's own position. A 4D mask hides each row's left
padding and unused tail, so rows of different lengths share one forward.

The model calls `update()` exactly as it would on a transformers `Cache` (that is the whole
interface attention layers use), so any transformers causal LM whose layers call
`past_key_values.update(k, v, layer_idx)` runs on it unchanged. This is the plain runner's cache; the
fast runner (fast_model.py) keeps its own static cache for the architectures it supports.
"""

from __future__ import annotations

import torch


class SlotKVCache:
    def __init__(self, num_slots: int, max_len: int, initial_len: int = 256):
        self.num_slots = num_slots
        self.max_len = max_len
        self.capacity = min(initial_len, max_len)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # Set by the runner before each forward: rows [row0, row0+n) and where their new keys go.
        self._row0 = 0
        self._rows = 0
        self._write_pos: torch.Tensor | None = None  # decode: [n] cache index per row
        self._prefill_len = 0  # prefill: keys go to [0, T) of each row
        self._kv_len = 0
        self._row_idx: torch.Tensor | None = None

    # -- called by the runner ------------------------------------------------------------------
    def ensure_capacity(self, length: int) -> None:
        """Grow every layer's rows to hold `length` positions (doubling; rare, so copies are fine)."""
        if length <= self.capacity:
            return
        new = self.capacity
        while new < length:
            new *= 2
        new = min(max(new, length), self.max_len)
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                grown = t.new_zeros(t.shape[0], t.shape[1], new, t.shape[3])
                grown[:, :, : self.capacity] = t
                store[i] = grown
        self.capacity = new

    def begin_prefill(self, row0: int, rows: int, length: int) -> None:
        self.ensure_capacity(length)
        self._row0, self._rows, self._prefill_len, self._write_pos, self._kv_len = row0, rows, length, None, length

    def begin_decode(self, rows: int, write_pos: torch.Tensor, kv_len: int) -> None:
        self.ensure_capacity(kv_len)
        self._row0, self._rows, self._write_pos, self._kv_len = 0, rows, write_pos, kv_len
        self._row_idx = torch.arange(rows, device=write_pos.device)

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy row `src`'s first `length` positions to row `dst` (compaction after a sequence leaves)."""
        for store in (self.keys, self.values):
            for t in store:
                t[dst, :, :length] = t[src, :, :length]

    # -- called by the model's attention layers ------------------------------------------------
    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx == len(self.keys):  # first use: shapes come from the model itself
            shape = (self.num_slots, key.shape[1], self.capacity, key.shape[3])
            self.keys.append(key.new_zeros(shape))
            self.values.append(value.new_zeros(shape))
        k_store, v_store = self.keys[layer_idx], self.values[layer_idx]
        rows = slice(self._row0, self._row0 + self._rows)
        if self._write_pos is None:
            k_store[rows, :, : self._prefill_len] = key
            v_store[rows, :, : self._prefill_len] = value
        else:
            k_store[self._row_idx, :, self._write_pos] = key[:, :, 0]
            v_store[self._row_idx, :, self._write_pos] = value[:, :, 0]
        return k_store[rows, :, : self._kv_len], v_store[rows, :, : self._kv_len]

    # transformers asks a cache these in a few generic code paths; answer like an empty DynamicCache.
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    @property
    def is_compileable(self) -> bool:
        return False
