"""The fast engine's GPU-only code paths against their references, on the GPU (issue 8's correctness bar).

1. Each Triton kernel (kernels.py) against its torch reference on random inputs, bf16 and fp32,
   with the head layouts of Qwen2.5-7B (28/4 heads), Qwen2.5-1.5B (12/2) and the toy (2/1, head_dim 64).
2. The trained toy model in fp32 on CUDA: the fast engine (CUDA graphs) against the plain engine and
   HF `generate` — greedy tokens must be equal; seeded sampling (temperature, top-p, top-k,
   repetition penalty) must give the same tokens on both engines.
   The paged cache on CUDA (Triton decode over block tables) against the plain engine, greedy.
   The chunk attention after a cached prefix (torch's lower-right causal bias) against an explicit mask, timed.
3. Multi-LoRA on the slot cache's CUDA graphs (stacked LoRAs, static adapter ids) against the plain engine.

    python benchmarks/engine_gpu_check.py TOY_DIR     (exit status 1 when a check fails)
"""

from __future__ import annotations

import sys

import torch

from swiftkit.serve.engine import kernels
from swiftkit.serve.engine.engine import Engine, EngineOptions
from swiftkit.serve.engine.request import Request, SamplingParams

failures: list[str] = []


def check(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    diff = (got.float() - want.float()).abs().max().item()
    ok = diff <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max |diff| {diff:.3g} (tolerance {tol})")
    if not ok:
        failures.append(name)


def kernel_checks() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    for dtype, tol in ((torch.bfloat16, 2e-2), (torch.float32, 1e-4)):
        for heads, kv_heads, dim in ((28, 4, 128), (12, 2, 128), (2, 1, 64)):
            tag = f"{str(dtype)[6:]} H{heads}/KV{kv_heads}/D{dim}"
            slots, max_len, rows = 9, 640, 6
            kc = torch.randn(slots, kv_heads, max_len, dim, device="cuda", dtype=dtype, generator=gen)
            vc = torch.randn_like(kc)
            q = torch.randn(rows, heads, dim, device="cuda", dtype=dtype, generator=gen)
            slot_ids = torch.tensor([3, 0, 8, 5, 1, 7], device="cuda")
            lens = torch.tensor([1, 63, 64, 65, 300, 640], device="cuda")
            want = kernels.decode_attention_ref(q, kc, vc, slot_ids, lens, dim ** -0.5)
            for splits in (1, 8, 64):
                got = kernels.decode_attention(q, kc, vc, slot_ids, lens, dim ** -0.5, splits)
                check(f"decode_attention {tag} splits={splits}", got, want, tol)
            n = 5
            qkv = torch.randn(n, (heads + 2 * kv_heads) * dim, device="cuda", dtype=dtype, generator=gen)
            pos = torch.tensor([0, 1, 17, 300, 639], device="cuda")
            slot_n = torch.tensor([2, 2, 4, 6, 0], device="cuda")
            angles = torch.arange(max_len, device="cuda")[:, None] * (1e-4 ** (torch.arange(dim // 2, device="cuda") / (dim // 2)))
            cos, sin = torch.cat([angles.cos()] * 2, -1).to(dtype), torch.cat([angles.sin()] * 2, -1).to(dtype)
            k1, v1, k2, v2 = kc.clone(), vc.clone(), kc.clone(), vc.clone()
            q_want = kernels.rope_and_store_ref(qkv, pos, slot_n, cos, sin, k1, v1, heads, kv_heads)
            q_got = kernels.rope_and_store(qkv, pos, slot_n, cos, sin, k2, v2, heads, kv_heads)
            check(f"rope q {tag}", q_got, q_want, tol)
            check(f"rope k cache {tag}", k2, k1, tol)
            check(f"v cache {tag}", v2, v1, 0.0)
            # the paged pool's layout [blocks, block_size, kv_heads, D], rows over shuffled blocks
            bs = 16
            pool_k = torch.randn(3 * max_len // bs * 2, bs, kv_heads, dim, device="cuda", dtype=dtype, generator=gen)
            pool_v = torch.randn_like(pool_k)
            tables = torch.stack([torch.randperm(pool_k.shape[0], device="cuda", generator=gen)[:max_len // bs]
                                  for _ in range(rows)])
            want = kernels.paged_decode_attention_ref(q, pool_k, pool_v, tables, lens, dim ** -0.5)
            for splits in (1, 8, 64):
                got = kernels.paged_decode_attention(q, pool_k, pool_v, tables, lens, dim ** -0.5, splits)
                check(f"paged_decode_attention {tag} splits={splits}", got, want, tol)
            blocks, offsets = tables[0, pos // bs], pos % bs
            k1, v1, k2, v2 = pool_k.clone(), pool_v.clone(), pool_k.clone(), pool_v.clone()
            q_want = kernels.paged_rope_and_store_ref(qkv, pos, blocks, offsets, cos, sin, k1, v1, heads, kv_heads)[0]
            q_got = kernels.paged_rope_and_store(qkv, pos, blocks, offsets, cos, sin, k2, v2, heads, kv_heads)
            check(f"paged rope q {tag}", q_got, q_want, tol)
            check(f"paged rope k blocks {tag}", k2, k1, tol)
            check(f"paged v blocks {tag}", v2, v1, 0.0)
            # a chunk (or a prefix-cache hit's rest) after cached positions: strided views, as prefill_paged passes
            for new_len, total in ((1, 1), (7, 300), (512, 3000)):
                qp = torch.randn(1, new_len, heads, dim, device="cuda", dtype=dtype, generator=gen).transpose(1, 2)
                kp = torch.randn(1, total, kv_heads, dim, device="cuda", dtype=dtype, generator=gen).transpose(1, 2)
                vp = torch.randn_like(kp)
                check(f"prefix_attention {tag} {new_len} after {total - new_len}",
                      kernels.prefix_attention(qp, kp, vp, dim ** -0.5),
                      kernels.prefix_attention_ref(qp, kp, vp, dim ** -0.5), tol)
        h = torch.randn(7, 3584, device="cuda", dtype=dtype, generator=gen)
        r = torch.randn_like(h)
        w = torch.randn(3584, device="cuda", dtype=dtype, generator=gen)
        for residual in (None, r):
            (got, got_r), (want, want_r) = kernels.add_rms_norm(h, residual, w, 1e-6), kernels.add_rms_norm_ref(h, residual, w, 1e-6)
            check(f"add_rms_norm {str(dtype)[6:]} residual={residual is not None}", got, want, tol * 4)
            check(f"residual sum {str(dtype)[6:]}", got_r, want_r, 0.0)
        gu = torch.randn(7, 2 * 18944, device="cuda", dtype=dtype, generator=gen)
        check(f"silu_mul {str(dtype)[6:]}", kernels.silu_mul(gu), kernels.silu_mul_ref(gu), tol)


def prefix_attention_timing() -> None:
    """The long-prompt row's chunk attention: 512 and 2,048 new tokens after a 28k prefix, 7B heads, bf16."""
    for new_len in (512, 2048):
        q = torch.randn(1, 28, new_len, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, 28_000 + new_len, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        for name, fn in (("prefix_attention", kernels.prefix_attention), ("explicit mask", kernels.prefix_attention_ref)):
            fn(q, k, v, 0.088)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(5):
                fn(q, k, v, 0.088)
            end.record()
            torch.cuda.synchronize()
            print(f"     {name}: {new_len} after 28,000, 28/4 heads bf16: {start.elapsed_time(end) / 5:.2f} ms per layer")


def toy_checks(toy_dir: str) -> None:
    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(toy_dir, dtype="float32", device="cuda")
    prompts = [tokenizer(f"{a} {b} {a + b} what is the larger of {a} and {b}", add_special_tokens=False)["input_ids"]
               for a, b in zip(range(10, 90, 3), range(95, 15, -3), strict=False)][:24]

    def generate(kind: str, params: list[SamplingParams], kv_cache: str = "auto") -> list[list[int]]:
        options = EngineOptions(max_num_seqs=8, max_model_len=256, engine=kind, kv_cache=kv_cache, prefix_caching=True)
        engine = Engine(model, tokenizer, [tokenizer.eos_token_id], options)
        requests = [Request(list(p), sp, sink=lambda o: None) for p, sp in zip(prompts, params, strict=True)]
        for r in requests:
            engine.submit(r)
        engine.drain()
        return [r.output_ids for r in requests]

    greedy = [SamplingParams(max_tokens=8 + (i * 13) % 90, temperature=0.0, ignore_eos=True) for i in range(len(prompts))]
    fast, plain = generate("fast", greedy), generate("plain", greedy)
    same = sum(a == b for a, b in zip(fast, plain, strict=True))
    print(f"{'ok  ' if same == len(fast) else 'FAIL'} toy fp32 greedy: fast == plain for {same}/{len(fast)} requests "
          f"({sum(map(len, fast))} tokens)")
    hf = [model.generate(torch.tensor([p], device="cuda"), max_new_tokens=len(f), min_new_tokens=len(f), do_sample=False,
                         eos_token_id=None, pad_token_id=0)[0, len(p):].tolist() for p, f in zip(prompts[:6], fast, strict=False)]
    same_hf = sum(a == b for a, b in zip(fast, hf, strict=False))
    print(f"{'ok  ' if same_hf == len(hf) else 'FAIL'} toy fp32 greedy: fast == HF generate for {same_hf}/{len(hf)} requests")
    paged = generate("fast", greedy, kv_cache="paged")  # Triton decode over block tables, prefix caching on
    same_p = sum(a == b for a, b in zip(paged, plain, strict=True))
    print(f"{'ok  ' if same_p == len(paged) else 'FAIL'} toy fp32 greedy: fast paged == plain for {same_p}/{len(paged)}")
    if same_p != len(paged):
        failures.append("toy paged greedy")
    sampled = [SamplingParams(max_tokens=32, temperature=1.3, top_p=0.95, top_k=50, repetition_penalty=1.1, seed=7 + i,
                              ignore_eos=True) for i in range(len(prompts))]
    fast_s, plain_s = generate("fast", sampled), generate("plain", sampled)
    same_s = sum(a == b for a, b in zip(fast_s, plain_s, strict=True))
    print(f"{'ok  ' if same_s == len(fast_s) else 'FAIL'} toy fp32 seeded sampling: fast == plain for {same_s}/{len(fast_s)}; "
          f"{len({tuple(x) for x in fast_s})} distinct outputs")
    for label, a, b in (("greedy", same, len(fast)), ("generate", same_hf, len(hf)), ("sampling", same_s, len(fast_s))):
        if a != b:
            failures.append(f"toy {label}")


def lora_checks(toy_dir: str) -> None:
    """Multi-LoRA on the slot cache's CUDA graphs: rows of the base and of two random LoRAs in one batch, greedy,
    against the plain engine (PEFT's mixed batch)."""
    from peft import LoraConfig, get_peft_model

    from swiftkit.loading import load_model

    def model_with_adapters():
        model, tokenizer, _ = load_model(toy_dir, dtype="float32", device="cuda")
        torch.manual_seed(3)
        cfg = LoraConfig(r=4, lora_alpha=16, init_lora_weights=False, target_modules=["q_proj", "v_proj", "down_proj"])
        peft_model = get_peft_model(model, cfg, adapter_name="a")
        peft_model.add_adapter("b", cfg)
        return peft_model.eval(), tokenizer

    prompts = [[5 + i, 17, 29 + 2 * i, 40] * (1 + i % 3) for i in range(12)]
    names = [(None, "a", "b")[i % 3] for i in range(12)]
    outputs = {}
    for kind in ("fast", "plain"):
        model, tokenizer = model_with_adapters()
        engine = Engine(model, tokenizer, [], EngineOptions(max_num_seqs=8, max_model_len=128, engine=kind),
                        multi_adapter=True)
        params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
        requests = [Request(list(p), params, sink=lambda o: None, adapter=n) for p, n in zip(prompts, names, strict=True)]
        for r in requests:
            engine.submit(r)
        engine.drain()
        outputs[kind] = [r.output_ids for r in requests]
        print(f"     {kind}: {type(engine.runner).__name__}, graphs {len(getattr(engine.runner, '_graphs', {}))}")
    same = sum(a == b for a, b in zip(outputs["fast"], outputs["plain"], strict=True))
    print(f"{'ok  ' if same == len(prompts) else 'FAIL'} toy fp32 multi-LoRA greedy (graphs): fast == plain for "
          f"{same}/{len(prompts)}; {len({tuple(x) for x in outputs['fast']})} distinct outputs")
    if same != len(prompts):
        failures.append("toy multi-LoRA")


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__)
    kernel_checks()
    prefix_attention_timing()
    toy_checks(sys.argv[1])
    lora_checks(sys.argv[1])
    print("FAILED: " + ", ".join(failures) if failures else "all checks passed")
    sys.exit(1 if failures else 0)
