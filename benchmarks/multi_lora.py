"""Issue 16's multi-LoRA row: N streams spread over K LoRA adapters against the same N streams on the base
model alone, in one run, through swiftkit's engine (the paged fast path, and the plain transformers forward
for reference). Adapters are random (non-zero B) rank-R LoRAs on every projection, made in memory with PEFT.

    OMP_NUM_THREADS=1 python benchmarks/multi_lora.py MODEL [--adapters 8] [--streams 16] [--rank 16]
        [--prompt-len 128] [--max-tokens 64] [--engines fast,plain]

MODEL: a model reference (e.g. the SmolLM2 import) or a `swiftkit bench` architecture (qwen2.5-7b, ...).
Prints a table: tok/s, ITL p50/p99, and the ratio multi-LoRA / base for each engine.
"""

from __future__ import annotations

import argparse

import torch


def load(model_ref: str, dtype: str):
    from swiftkit.bench.engine import word_tokenizer
    from swiftkit.bench.train import ARCHITECTURES, random_model
    from swiftkit.loading import default_device, load_model, torch_dtype

    device = torch.device(default_device())
    if model_ref in ARCHITECTURES:
        torch.manual_seed(0)
        model = random_model(model_ref, torch_dtype(dtype, device.type), device)
        return model.eval(), word_tokenizer(model.config.vocab_size)
    model, tokenizer, _ = load_model(model_ref, dtype=dtype, device=str(device))
    return model.eval(), tokenizer


def with_adapters(model, count: int, rank: int):
    """`count` random LoRAs (a0, a1, ...) on q/k/v/o/gate/up/down, as one PeftModel."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    torch.manual_seed(1)
    peft_model = get_peft_model(model, cfg, adapter_name="a0")
    for i in range(1, count):
        peft_model.add_adapter(f"a{i}", cfg)
    for name, param in peft_model.named_parameters():  # small, so outputs stay in range but differ per adapter
        if "lora_B" in name:
            param.data.normal_(0, 0.02)
    return peft_model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--engines", default="fast,plain")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    from swiftkit.bench.engine import run_engine
    from swiftkit.serve.engine.engine import Engine, EngineOptions

    rows = []
    for kind in args.engines.split(","):
        results = []
        for adapters in (0, args.adapters):  # the base model alone, then a fresh copy with the adapters
            model, tokenizer = load(args.model, args.dtype)
            if adapters:
                model = with_adapters(model, adapters, args.rank)
            torch.manual_seed(2)
            vocab = model.get_output_embeddings().weight.shape[0]
            prompts = [torch.randint(10, vocab - 10, (args.prompt_len,)).tolist() for _ in range(args.streams)]
            names = [f"a{i % adapters}" if adapters else None for i in range(args.streams)]
            options = EngineOptions(max_num_seqs=args.streams, max_model_len=args.prompt_len + args.max_tokens + 8,
                                    engine=kind, prefix_caching=False)
            engine = Engine(model, tokenizer, [], options, multi_adapter=bool(adapters))
            run_engine(engine, prompts[:2], 4, names[:2])  # warm-up
            results.append(run_engine(engine, prompts, args.max_tokens, names))
            runner = type(engine.runner).__name__
            del engine, model
        rows.append((kind, runner, *results))
    print(f"| engine (runner with LoRAs) | {args.streams} streams, base model alone: tok/s (ITL p50 / p99 ms) | "
          f"spread over {args.adapters} rank-{args.rank} LoRAs | multi-LoRA / base |")
    print("|---|---|---|---|")
    for kind, runner, base, multi in rows:
        print(f"| {kind} ({runner}) | {base['tok_s']:.1f} ({base['itl_p50_ms']:.1f} / {base['itl_p99_ms']:.1f}) | "
              f"{multi['tok_s']:.1f} ({multi['itl_p50_ms']:.1f} / {multi['itl_p99_ms']:.1f}) | "
              f"{multi['tok_s'] / base['tok_s']:.2f}x |")
    if len(rows) > 1:
        fast, plain = rows[0][3], rows[1][3]
        print(f"multi-LoRA {rows[0][0]} / {rows[1][0]}: {fast['tok_s'] / plain['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
