"""The fast engine's per-token operations, each as a Triton kernel (CUDA) and a torch reference (CPU).

Written by hand because no installed library does these over swiftkit's slot cache: torch's SDPA
and FlexAttention read a padded cache and expand grouped KV heads per decode step, and
flash-attn / vLLM's kernels are not dependencies here. The kernels are the levers issue 8 names:

- `decode_attention`: one query token per sequence against only that sequence's live positions,
  grouped-query aware (each program loads one KV head once for all its query heads), split along
  the sequence (flash-decoding) so even one stream fills the GPU; the split is computed from each
  row's own length inside the kernel, so a CUDA graph captured once serves every length.
- `rope_and_store`: rotary embedding of q and k plus the write of k and v into the cache, one launch.
- `add_rms_norm`: the residual add fused with the next RMSNorm (HF rounding order kept).
- `silu_mul`: SwiGLU's activation.

The torch references are what CPU runs and what `benchmarks/engine_gpu_check.py` compares the
kernels against on the GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the torch references below are used
    triton = None


def use_triton(t: torch.Tensor) -> bool:
    return triton is not None and t.is_cuda


# -- references (CPU, and the oracle for the kernels) --------------------------------------------------------

def add_rms_norm_ref(h, residual, weight, eps):
    residual = h if residual is None else residual + h
    x = residual.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(h.dtype), residual


def rope_and_store_ref(qkv, pos, slots, cos, sin, k_cache, v_cache, heads, kv_heads):
    """qkv [N, (H+2KV)*D] → rotated q [N, H, D]; rotated k and v written to cache[slot, :, pos]."""
    d = k_cache.shape[-1]
    q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], -1)
    c, s = cos[pos][:, None], sin[pos][:, None]
    q, k = _rotate(q.view(-1, heads, d), c, s), _rotate(k.view(-1, kv_heads, d), c, s)
    k_cache[slots, :, pos] = k
    v_cache[slots, :, pos] = v.view(-1, kv_heads, d)
    return q


def _rotate(x, cos, sin):
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat((-x2, x1), -1) * sin


def decode_attention_ref(q, k_cache, v_cache, slots, lens, scale):
    """q [B, H, D]; each row attends to positions [0, lens[b]) of its slot. Returns [B, H*D]."""
    longest = int(lens.max())
    k = k_cache[:, :, :longest][slots]
    v = v_cache[:, :, :longest][slots]
    live = torch.arange(longest, device=q.device)[None, :] < lens[:, None]
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=live[:, None, None], scale=scale, enable_gqa=True)
    return out.reshape(q.shape[0], -1)


def paged_rope_and_store_ref(qkv, pos, blocks, offsets, cos, sin, k_cache, v_cache, heads, kv_heads):
    """As rope_and_store_ref over a paged cache [blocks, block_size, kv_heads, D]: token t's k and v go to
    block blocks[t] at offset offsets[t]; RoPE still uses its position pos[t]. Returns q, k, v ([N, heads, D])."""
    d = k_cache.shape[-1]
    q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], -1)
    c, s = cos[pos][:, None], sin[pos][:, None]
    q, k, v = _rotate(q.view(-1, heads, d), c, s), _rotate(k.view(-1, kv_heads, d), c, s), v.view(-1, kv_heads, d)
    k_cache[blocks, offsets] = k
    v_cache[blocks, offsets] = v
    return q, k, v


def gather_blocks(cache, table):
    """The positions held by blocks `table` ([..., n]) of a paged cache as [..., n * block_size, kv_heads, D].

    Blocks are [block_size, kv_heads, D], so one index_select copies them and the position axis is a free view
    (the earlier [kv_heads, block_size, D] layout needed a second, transposing copy: half of the CPU decode
    attention's time). Callers transpose to SDPA's [kv_heads, positions, D] as a view; SDPA takes the strides."""
    block, kv_heads, d = cache.shape[1:]
    picked = cache.view(cache.shape[0], -1).index_select(0, table.reshape(-1))
    return picked.view(*table.shape[:-1], table.shape[-1] * block, kv_heads, d)


def prefix_attention(q, k, v, scale):
    """q [1, H, new, D]: the new tokens after k/v's first total - new positions ([1, KV, total, D]) attend to
    all of those and causally to each other (a bottom-right causal mask). torch's lower-right causal bias
    dispatches to the flash / memory-efficient kernels on CUDA; an explicit boolean mask forces SDPA's math
    path, which expands the grouped heads and materialises [H, new, total] scores: a 512-token chunk after a
    30k prefix cost ≈ 125 ms per step on the H200 that way. On CPU both materialise the mask (same speed)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]),
                                          scale=scale, enable_gqa=True)


def prefix_attention_ref(q, k, v, scale):
    new, total = q.shape[2], k.shape[2]
    mask = torch.arange(total, device=q.device)[None] <= total - new + torch.arange(new, device=q.device)[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)


def paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, scale):
    """q [B, H, D]; row b attends to positions [0, lens[b]) held by blocks tables[b] (padded with any block
    id: positions past lens[b] are masked). Returns [B, H*D]. Reads only the rows' own blocks."""
    k = gather_blocks(k_cache, tables).transpose(1, 2)
    v = gather_blocks(v_cache, tables).transpose(1, 2)
    live = torch.arange(k.shape[2], device=q.device)[None, :] < lens[:, None]
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=live[:, None, None], scale=scale, enable_gqa=True)
    return out.reshape(q.shape[0], -1)


def silu_mul_ref(gate_up):
    gate, up = gate_up.chunk(2, -1)
    return F.silu(gate) * up


# -- dispatch ------------------------------------------------------------------------------------------------

def add_rms_norm(h, residual, weight, eps):
    if not use_triton(h):
        return add_rms_norm_ref(h, residual, weight, eps)
    n, dim = h.shape
    out = torch.empty_like(h)
    new_residual = h if residual is None else torch.empty_like(h)
    _add_rms_norm_kernel[(n,)](h, h if residual is None else residual, new_residual, weight, out, eps,
                               h.stride(0), HAS_RESIDUAL=residual is not None, DIM=dim,
                               BLOCK=triton.next_power_of_2(dim))
    return out, new_residual


def rope_and_store(qkv, pos, slots, cos, sin, k_cache, v_cache, heads, kv_heads):
    if not use_triton(qkv):
        return rope_and_store_ref(qkv, pos, slots, cos, sin, k_cache, v_cache, heads, kv_heads)
    # slots [slots, kv_heads, max_len, D]: a token's cache row is its position
    return _rope_store_triton(qkv, pos, slots, None, cos, sin, k_cache, v_cache, heads, kv_heads)


def paged_rope_and_store(qkv, pos, blocks, offsets, cos, sin, k_cache, v_cache, heads, kv_heads):
    """As paged_rope_and_store_ref, returning q only on CUDA (the kernel writes k and v to the blocks)."""
    if not use_triton(qkv):
        return paged_rope_and_store_ref(qkv, pos, blocks, offsets, cos, sin, k_cache, v_cache, heads, kv_heads)[0]
    return _rope_store_triton(qkv, pos, blocks, offsets, cos, sin, k_cache, v_cache, heads, kv_heads)


def _rope_store_triton(qkv, pos, where, offsets, cos, sin, k_cache, v_cache, heads, kv_heads):
    """`where`: each token's slot, or (with `offsets`) its block; blocks are [block_size, kv_heads, D], so their
    kv-head stride is stride(2) and their position stride stride(1)."""
    paged = offsets is not None
    n = qkv.shape[0]
    d = k_cache.shape[-1]
    q = torch.empty(n, heads, d, dtype=qkv.dtype, device=qkv.device)
    stride_kh, stride_kn = (k_cache.stride(2), k_cache.stride(1)) if paged else (k_cache.stride(1), k_cache.stride(2))
    _rope_store_kernel[(n, heads + kv_heads)](
        qkv, pos, where, offsets if paged else pos, cos, sin, q, k_cache, v_cache, qkv.stride(0), cos.stride(0),
        q.stride(0), k_cache.stride(0), stride_kh, stride_kn, HEADS=heads, KV_HEADS=kv_heads, HALF=d // 2, PAGED=paged,
    )
    return q


def decode_attention(q, k_cache, v_cache, slots, lens, scale, splits: int):
    if not use_triton(q):
        return decode_attention_ref(q, k_cache, v_cache, slots, lens, scale)
    # slots [slots, kv_heads, max_len, D]: slot, kv-head and position strides
    return _decode_attention_triton(q, k_cache, v_cache, slots, lens, scale, splits, k_cache.stride(1),
                                    k_cache.stride(2), paged=False)


def paged_decode_attention(q, k_cache, v_cache, tables, lens, scale, splits: int):
    if not use_triton(q):
        return paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, scale)
    # blocks [blocks, block_size, kv_heads, D]: the kv-head stride is stride(2), the position stride stride(1)
    return _decode_attention_triton(q, k_cache, v_cache, tables, lens, scale, splits, k_cache.stride(2),
                                    k_cache.stride(1), paged=True)


def _decode_attention_triton(q, k_cache, v_cache, where, lens, scale, splits, stride_kh, stride_kn, paged):
    b, heads, d = q.shape
    kv_heads = k_cache.shape[2 if paged else 1]
    group = heads // kv_heads
    out = torch.empty(b, heads, d, dtype=q.dtype, device=q.device)
    # one split: the kernel writes the normalised output itself and the reduce launch is skipped
    part = out[:, :, None] if splits == 1 else torch.empty(b, heads, splits, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, heads, splits, dtype=torch.float32, device=q.device)
    _decode_split_kernel[(b, kv_heads, splits)](
        q, k_cache, v_cache, where, lens, part, lse, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), stride_kh, stride_kn,
        part.stride(0), part.stride(1), part.stride(2), lse.stride(0), lse.stride(1), where.stride(0) if paged else 0,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), D=d, BLOCK_N=64, SPLITS=splits,
        IEEE=q.dtype == torch.float32, PAGED=paged, BS=k_cache.shape[1] if paged else 1, num_warps=4,
    )
    if splits > 1:
        _decode_reduce_kernel[(b, heads)](part, lse, out, part.stride(0), part.stride(1), part.stride(2),
                                          lse.stride(0), lse.stride(1), out.stride(0), out.stride(1),
                                          SPLITS=splits, SPLITS_PAD=triton.next_power_of_2(splits), D=d)
    return out.view(b, heads * d)


def silu_mul(gate_up):
    if not use_triton(gate_up):
        return silu_mul_ref(gate_up)
    n, width = gate_up.shape
    half = width // 2
    out = torch.empty(n, half, dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul_kernel[(n, triton.cdiv(half, block))](gate_up, out, gate_up.stride(0), out.stride(0), half, BLOCK=block)
    return out


# -- kernels -------------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _add_rms_norm_kernel(H, R, NEW_R, W, OUT, eps, stride, HAS_RESIDUAL: tl.constexpr, DIM: tl.constexpr,
                             BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # row * stride passes 2**31 in a long prefill: int32 would wrap
        cols = tl.arange(0, BLOCK)
        mask = cols < DIM
        h = tl.load(H + row * stride + cols, mask=mask, other=0.0)
        if HAS_RESIDUAL:
            # round the sum to the model dtype first, as `residual + hidden` does in transformers
            h = (tl.load(R + row * stride + cols, mask=mask, other=0.0).to(tl.float32) + h.to(tl.float32)).to(h.dtype)
            tl.store(NEW_R + row * stride + cols, h, mask=mask)
        x = h.to(tl.float32)
        var = tl.sum(x * x, 0) / DIM
        y = (x * tl.rsqrt(var + eps)).to(h.dtype)
        w = tl.load(W + cols, mask=mask, other=0.0)
        tl.store(OUT + row * stride + cols, (w.to(tl.float32) * y.to(tl.float32)).to(h.dtype), mask=mask)

    @triton.jit
    def _rope_store_kernel(QKV, POS, SLOT, OFFS, COS, SIN, Q, KC, VC, stride_t, stride_c, stride_q,
                           stride_ks, stride_kh, stride_kn, HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
                           HALF: tl.constexpr, PAGED: tl.constexpr):
        t = tl.program_id(0).to(tl.int64)
        head = tl.program_id(1)
        pos = tl.load(POS + t)
        d = tl.arange(0, HALF)
        cos1 = tl.load(COS + pos * stride_c + d).to(tl.float32)
        cos2 = tl.load(COS + pos * stride_c + HALF + d).to(tl.float32)
        sin1 = tl.load(SIN + pos * stride_c + d).to(tl.float32)
        sin2 = tl.load(SIN + pos * stride_c + HALF + d).to(tl.float32)
        src = QKV + t * stride_t + head * 2 * HALF  # q heads, then k heads, in qkv's own order
        x1 = tl.load(src + d).to(tl.float32)
        x2 = tl.load(src + HALF + d).to(tl.float32)
        o1 = x1 * cos1 - x2 * sin1
        o2 = x2 * cos2 + x1 * sin2
        if head < HEADS:
            dst = Q + t * stride_q + head * 2 * HALF
            tl.store(dst + d, o1.to(Q.dtype.element_ty))
            tl.store(dst + HALF + d, o2.to(Q.dtype.element_ty))
        else:
            kvh = head - HEADS
            slot = tl.load(SLOT + t).to(tl.int64)  # paged: the token's block, at offset OFFS[t] inside it
            row = tl.load(OFFS + t) if PAGED else pos
            off = slot * stride_ks + kvh * stride_kh + row * stride_kn
            tl.store(KC + off + d, o1.to(KC.dtype.element_ty))
            tl.store(KC + off + HALF + d, o2.to(KC.dtype.element_ty))
            v = QKV + t * stride_t + (HEADS + KV_HEADS + kvh) * 2 * HALF
            tl.store(VC + off + d, tl.load(v + d))
            tl.store(VC + off + HALF + d, tl.load(v + HALF + d))

    @triton.jit
    def _decode_split_kernel(Q, KC, VC, SLOT, LENS, PART, LSE, scale, stride_qb, stride_qh, stride_ks, stride_kh,
                             stride_kn, stride_pb, stride_ph, stride_ps, stride_lb, stride_lh, stride_tb,
                             GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                             SPLITS: tl.constexpr, IEEE: tl.constexpr, PAGED: tl.constexpr, BS: tl.constexpr):
        # PAGED: SLOT is the block tables [B, max blocks] (row stride stride_tb) and the cache [blocks, BS, ...];
        # position n of row b is at block SLOT[b, n // BS], offset n % BS. Else SLOT[b] is the row's slot.
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        split = tl.program_id(2)
        length = tl.load(LENS + b)
        # this row's live positions, cut into SPLITS chunks of whole blocks
        chunk = tl.cdiv(tl.cdiv(length, SPLITS), BLOCK_N) * BLOCK_N
        start = split * chunk
        end = tl.minimum(start + chunk, length)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, D)
        heads = kvh * GROUP + g
        gmask = g < GROUP
        q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=gmask[:, None], other=0.0)
        m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        total = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, D], tl.float32)
        if not PAGED:
            base = tl.load(SLOT + b).to(tl.int64) * stride_ks + kvh * stride_kh
        for n0 in range(start, end, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            nmask = n < end
            if PAGED:
                block = tl.load(SLOT + b * stride_tb + n // BS, mask=nmask, other=0).to(tl.int64)
                rows = block * stride_ks + (n % BS) * stride_kn + kvh * stride_kh
            else:
                rows = base + n * stride_kn
            k = tl.load(KC + rows[:, None] + d[None, :], mask=nmask[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
            else:
                s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(nmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m - m_new)
            total = total * alpha + tl.sum(p, 1)
            v = tl.load(VC + rows[:, None] + d[None, :], mask=nmask[:, None], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        has = total > 0
        out = acc / tl.where(has, total, 1.0)[:, None]
        lse = tl.where(has, m + tl.log(tl.where(has, total, 1.0)), float("-inf"))
        tl.store(PART + b * stride_pb + heads[:, None] * stride_ph + split * stride_ps + d[None, :],
                 out.to(PART.dtype.element_ty), mask=gmask[:, None])
        tl.store(LSE + b * stride_lb + heads * stride_lh + split, lse, mask=gmask)

    @triton.jit
    def _decode_reduce_kernel(PART, LSE, OUT, stride_pb, stride_ph, stride_ps, stride_lb, stride_lh, stride_ob,
                              stride_oh, SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, D: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        s = tl.arange(0, SPLITS_PAD)
        d = tl.arange(0, D)
        smask = s < SPLITS
        lse = tl.load(LSE + b * stride_lb + h * stride_lh + s, mask=smask, other=float("-inf"))
        w = tl.exp(lse - tl.max(lse, 0))  # empty splits weigh 0; split 0 is never empty
        part = tl.load(PART + b * stride_pb + h * stride_ph + s[:, None] * stride_ps + d[None, :],
                       mask=smask[:, None], other=0.0)
        out = tl.sum(w[:, None] * part, 0) / tl.sum(w, 0)
        tl.store(OUT + b * stride_ob + h * stride_oh + d, out.to(OUT.dtype.element_ty))

    @triton.jit
    def _silu_mul_kernel(GU, OUT, stride_in, stride_out, half, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # 64 x 2k prompt tokens x 2 x 8,960 columns is past 2**31
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < half
        gate = tl.load(GU + row * stride_in + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(GU + row * stride_in + half + cols, mask=mask, other=0.0)
        # F.silu rounds to the model dtype before the product, as here
        act = (gate * tl.sigmoid(gate)).to(up.dtype)
        tl.store(OUT + row * stride_out + cols, (act.to(tl.float32) * up.to(tl.float32)).to(up.dtype), mask=mask)
