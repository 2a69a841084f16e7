"""The Triton kernels against their torch references in Triton's interpreter (TRITON_INTERPRET=1, numpy on the
CPU), so a kernel change is checked before it meets a GPU. Skipped where triton is not installed (the CPU CI:
torch's CPU wheel does not bring it; `pip install triton` to run these). benchmarks/engine_gpu_check.py checks the
same kernels compiled, on CUDA, in bf16 too.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

CHECK = textwrap.dedent("""
    import torch
    from swiftkit.serve.engine import kernels

    kernels.use_triton = lambda t: True  # CPU tensors: the interpreter runs the kernels
    torch.manual_seed(0)
    worst = 0.0
    for heads, kv_heads, d in ((28, 4, 128), (9, 3, 64), (2, 1, 64)):
        n_blocks, bs = 40, 16
        kc = torch.randn(n_blocks, bs, kv_heads, d)
        vc = torch.randn_like(kc)
        lens = torch.tensor([1, 15, 16, 17, 100, 300])
        width = int(-(-lens.max() // bs))
        tables = torch.stack([torch.randperm(n_blocks)[:width] for _ in lens])
        q = torch.randn(len(lens), heads, d)
        want = kernels.paged_decode_attention_ref(q, kc, vc, tables, lens, d ** -0.5)
        for splits in (1, 4, 16):
            got = kernels.paged_decode_attention(q, kc, vc, tables, lens, d ** -0.5, splits)
            worst = max(worst, (got - want).abs().max().item())
        qkv = torch.randn(5, (heads + 2 * kv_heads) * d)
        pos = torch.tensor([0, 1, 17, 64, 299])
        blocks, offsets = torch.tensor([3, 3, 9, 20, 39]), pos % bs
        angles = torch.arange(512)[:, None] * (1e-4 ** (torch.arange(d // 2) / (d // 2)))
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        k1, v1, k2, v2 = kc.clone(), vc.clone(), kc.clone(), vc.clone()
        q_want = kernels.paged_rope_and_store_ref(qkv, pos, blocks, offsets, cos, sin, k1, v1, heads, kv_heads)[0]
        q_got = kernels.paged_rope_and_store(qkv, pos, blocks, offsets, cos, sin, k2, v2, heads, kv_heads)
        worst = max(worst, (q_got - q_want).abs().max().item(), (k2 - k1).abs().max().item(),
                    (v2 - v1).abs().max().item())
        # the slot layout through the same (shared) decode kernel
        sc = torch.randn(4, kv_heads, 320, d)
        slots = torch.tensor([2, 0, 3, 1, 2, 0])
        want = kernels.decode_attention_ref(q, sc, sc, slots, lens, d ** -0.5)
        got = kernels.decode_attention(q, sc, sc, slots, lens, d ** -0.5, 4)
        worst = max(worst, (got - want).abs().max().item())
    print(worst)
""")


ENGINE = textwrap.dedent("""
    import sys
    from swiftkit.loading import load_model
    from swiftkit.serve.engine import kernels
    from swiftkit.serve.engine.engine import Engine, EngineOptions
    from swiftkit.serve.engine.request import Request, SamplingParams

    model, tok, _ = load_model(sys.argv[1], dtype="float32", device="cpu")
    pairs = [(10, 95), (13, 92), (16, 89), (10, 95)]  # the last repeats the first: a prefix-cache hit
    prompts = [tok(f"{a} {b} {a + b} what is the larger of {a} and {b}", add_special_tokens=False)["input_ids"]
               for a, b in pairs]

    def generate(kind, triton):
        kernels.use_triton = lambda t: triton
        options = EngineOptions(max_num_seqs=4, max_model_len=128, engine=kind, kv_cache="paged", prefix_caching=True)
        engine = Engine(model, tok, [tok.eos_token_id], options)
        requests = [Request(list(p), SamplingParams(max_tokens=20 + 7 * i, temperature=0.0, ignore_eos=True),
                            sink=lambda o: None) for i, p in enumerate(prompts)]
        for r in requests:
            engine.submit(r)
        engine.drain()
        return [r.output_ids for r in requests]

    fast, plain = generate("fast", True), generate("plain", False)
    print(sum(a == b for a, b in zip(fast, plain)), len(fast))
""")


def interpreted(code: str, *args: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_paged_and_slot_kernels_equal_the_references_interpreted():
    out = interpreted(CHECK)
    assert float(out.split()[-1]) < 1e-4, out


def test_paged_engine_on_the_kernels_equals_the_plain_engine(toy_model):
    """Every kernel of the fast paged decode (norms, RoPE into blocks, split-K over block tables) interpreted,
    greedy, with late-finishing rows and a prefix hit, against the transformers forward."""
    same, total = interpreted(ENGINE, str(toy_model)).split()[-2:]
    assert same == total == "4"
