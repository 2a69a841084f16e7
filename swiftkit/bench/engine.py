"""`swiftkit bench engine`: generation speed in this process — swiftkit's engines against HF, with ratios.

Workloads (issue 8's table): for each --concurrency N, N requests of --prompt-len random tokens
submitted at once, each generating exactly --max-tokens (ignore_eos, greedy). Engines:
- fast / fast-slots / plain: swiftkit's engine stepped on this thread — prefill, decode, sampling and
  detokenization, everything a server does except HTTP (fast: its default KV cache, paged on CPU and slots
  on CUDA; fast-slots: the static slot cache);
- hf: `model.generate`, one batch of --hf-batch equal-length prompts at a time (no padding needed);
- hf-cb: transformers' continuous batching (`generate_batch`).
Shared prefix (--shared-prefix N): N common tokens + --prompt-len own ones per request, all submitted at
once (a cold cache: the burst computes the prefix once), through the paged fast engine with prefix caching
on, then off; TTFT p50 and tok/s side by side with the ratio.
Long prompt mid-run (--long-prompt N): --concurrency streams decode, and once all have started and the first has
a quarter of its tokens, one N-token prompt arrives; the streams' inter-token latency once all have started
(p50 / p99 / max, and p99 over the steps while it enters) with chunked prefill, with the prompt prefilled whole,
and with no long prompt at all (the baseline), paged fast engine; the ratios of the p99 while it enters to the
baseline's p99, and chunked to whole.
Fidelity: on fixed random tokens, the fast path's logits (a prefill, then teacher-forced decode
steps) against one forward of the transformers model: per-position max |Δlogit|, KL and argmax
agreement (on random-init bf16 weights the logits are nearly flat, so argmax equality alone says little).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from swiftkit.bench.config import BenchEngineConfig
from swiftkit.bench.serve import percentile
from swiftkit.console import console, out
from swiftkit.errors import SwiftkitError

ENGINES = ("fast", "fast-slots", "plain", "hf", "hf-cb")


def word_tokenizer(vocab_size: int):
    """A tokenizer with one word per id ("w123"), so every id a random model samples detokenizes to text.

    Random-init architectures have Qwen's 152k vocabulary but no Qwen tokenizer is available offline.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {f"w{i}": i for i in range(vocab_size - len(specials))}
    vocab.update({s: vocab_size - len(specials) + i for i, s in enumerate(specials)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )
    return tokenizer


def save_random_model(name: str, directory: str, dtype: str = "bfloat16", seed: int = 0) -> None:
    """A random-init architecture + word tokenizer saved as a plain HF directory (for `swiftkit serve`)."""
    from swiftkit.bench.train import random_model
    from swiftkit.loading import default_device

    torch.manual_seed(seed)
    model = random_model(name, getattr(torch, dtype), torch.device(default_device()))
    model.save_pretrained(directory)
    word_tokenizer(model.config.vocab_size).save_pretrained(directory)


def _model(cfg: BenchEngineConfig, device: torch.device):
    from swiftkit.bench.train import ARCHITECTURES, random_model
    from swiftkit.loading import torch_dtype

    dtype = torch_dtype(cfg.dtype, device.type)
    if cfg.model_config_name in ARCHITECTURES:
        torch.manual_seed(cfg.seed)
        model = random_model(cfg.model_config_name, dtype, device).eval()
        return model, word_tokenizer(model.config.vocab_size)
    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(cfg.model_config_name, dtype=str(dtype).removeprefix("torch."), device=str(device))
    return model.eval(), tokenizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_engine(engine, prompts: list[list[int]], max_tokens: int, adapters: list[str | None] | None = None) -> dict[str, float]:
    """All prompts at once through a swiftkit Engine stepped here (prompt i on adapters[i], if given); decode step
    times give the ITL."""
    from swiftkit.serve.engine.request import Request, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    generated = 0
    first: list[float] = []

    def sink(output) -> None:
        nonlocal generated
        generated += len(output.token_ids)
        if output.completion_tokens == 1 and output.token_ids:
            first.append(time.perf_counter())

    steps: list[float] = []
    start = last = time.perf_counter()
    for p, adapter in zip(prompts, adapters or [None] * len(prompts), strict=True):
        engine.submit(Request(list(p), params, sink=sink, adapter=adapter))

    def tick() -> None:
        nonlocal last
        now = time.perf_counter()
        steps.append(now - last)
        last = now

    engine.drain(tick)
    seconds = time.perf_counter() - start
    decode_steps = steps[1:]  # the first step also prefilled
    result = {"tok_s": generated / seconds, "seconds": seconds, "tokens": generated,
              "ttft_ms": 1000 * (max(first) - start), "ttft_p50_ms": 1000 * (percentile(first, 0.5) - start),
              "itl_p50_ms": 1000 * percentile(decode_steps, 0.5), "itl_p99_ms": 1000 * percentile(decode_steps, 0.99)}
    return {**result, **kv_usage(engine)}


def kv_usage(engine) -> dict[str, float]:
    """KV memory: the slot cache's whole allocation, or the paged pool's blocks ever written (its resident part)."""
    runner = engine.runner
    if hasattr(runner, "blocks"):
        per_block = runner.net.cache_bytes() / (runner.blocks.num_blocks + 1)
        return {"kv_gib": runner.blocks.high * per_block / 2**30, "preemptions": engine.preemptions,
                "prefix_hit_tokens": runner.blocks.hit_tokens}
    if hasattr(runner, "net"):
        return {"kv_gib": runner.net.cache_bytes() / 2**30}
    return {}


def run_hf(model, prompts: list[list[int]], max_tokens: int, batch: int) -> dict[str, float]:
    device = next(model.parameters()).device
    generated = 0
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), batch):
            ids = torch.tensor(prompts[i:i + batch], device=device)
            result = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                    min_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
            generated += (result.shape[1] - ids.shape[1]) * ids.shape[0]
    _sync(device)
    seconds = time.perf_counter() - start
    return {"tok_s": generated / seconds, "seconds": seconds, "tokens": generated}


def run_hf_cb(model, prompts: list[list[int]], max_tokens: int) -> dict[str, float]:
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, eos_token_id=-1,
                              pad_token_id=0)
    device = next(model.parameters()).device
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():  # its manager updates its static tensors in place: not under inference_mode
        results = model.generate_batch(inputs=prompts, generation_config=config, progress_bar=False)
    _sync(device)
    seconds = time.perf_counter() - start
    generated = sum(len(r.generated_tokens) for r in results.values())
    if generated < len(prompts) * max_tokens:
        raise RuntimeError(f"generated {generated} of {len(prompts) * max_tokens} tokens (see its log above)")
    return {"tok_s": generated / seconds, "seconds": seconds, "tokens": generated}


def _compare(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    diff = (got - want).abs().amax(-1)
    want_logp, got_logp = want.log_softmax(-1), got.log_softmax(-1)
    kl = (want_logp.exp() * (want_logp - got_logp)).sum(-1)
    return {"max_abs_logit_diff": float(diff.max()), "mean_max_abs_logit_diff": float(diff.mean()),
            "kl_max": float(kl.max()), "kl_mean": float(kl.mean()),
            "argmax_agreement": float((got.argmax(-1) == want.argmax(-1)).float().mean())}


def fidelity(model, prompt_len: int, steps: int, seed: int) -> dict[str, Any]:
    """Fast path (prefill + teacher-forced decode) vs one transformers forward over the same tokens.

    In bf16/fp16 both are also compared with an fp32 forward of the same weights: the eager path's own
    rounding error is the yardstick for the fast path's (deep random-init stacks amplify rounding).
    """
    import copy

    from swiftkit.serve.engine.fast_runner import FastRunner
    from swiftkit.serve.engine.request import Request, SamplingParams

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed + 1)
    rows = 4
    tokens = torch.randint(0, model.config.vocab_size, (rows, prompt_len + steps), generator=gen)
    with torch.inference_mode():
        reference = model(tokens.to(device)).logits.float()[:, prompt_len - 1:-1]
        exact = None
        if model.dtype != torch.float32:
            upcast = copy.deepcopy(model).float()
            exact = upcast(tokens.to(device)).logits.float()[:, prompt_len - 1:-1]
            del upcast
        runner = FastRunner(model, rows, prompt_len + steps)
        requests = [Request(tokens[r, :prompt_len].tolist(), SamplingParams(), sink=None) for r in range(rows)]
        logits = [runner.prefill(requests, 0)[0]]
        for j in range(steps - 1):
            for r, req in enumerate(requests):
                req.output_ids.append(int(tokens[r, prompt_len + j]))
            logits.append(runner.decode(requests).clone())
        fast = torch.stack(logits, 1)  # [rows, steps, V]
    del runner
    result = {"positions": rows * steps, "logit_std": float(reference.std()), "fast_vs_eager": _compare(fast, reference)}
    if exact is not None:
        result["eager_vs_fp32"] = _compare(reference, exact)
        result["fast_vs_fp32"] = _compare(fast, exact)
    return result


def _parse(cfg: BenchEngineConfig) -> tuple[list[str], list[int]]:
    engines = [e.strip() for e in cfg.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        raise SwiftkitError(f"--engines: unknown {', '.join(bad) or '(none)'}", f"choose from {', '.join(ENGINES)}")
    try:
        concurrency = [int(c) for c in cfg.concurrency.split(",") if c.strip()]
    except ValueError:
        raise SwiftkitError(f"--concurrency {cfg.concurrency!r} is not a comma list of integers") from None
    if not concurrency or min(concurrency) < 1:
        raise SwiftkitError("--concurrency needs positive integers, e.g. 1,64")
    return engines, concurrency


def run(cfg: BenchEngineConfig) -> dict[str, Any]:
    from swiftkit.loading import default_device
    from swiftkit.serve.engine.engine import Engine, EngineOptions

    engines, concurrency = _parse(cfg)
    device = torch.device(default_device())
    model, tokenizer = _model(cfg, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    console.print(f"[bold]bench engine[/] {cfg.model_config_name} on {name}, {next(model.parameters()).dtype}, "
                  f"prompt {cfg.prompt_len} + {cfg.max_tokens} new, concurrency {concurrency}")
    gen = torch.Generator().manual_seed(cfg.seed)
    vocab = min(model.config.vocab_size, len(tokenizer))
    prompts = torch.randint(0, vocab, (max(concurrency), cfg.prompt_len), generator=gen).tolist()
    result: dict[str, Any] = {"model": cfg.model_config_name, "device": name, "dtype": str(next(model.parameters()).dtype),
                              "prompt_len": cfg.prompt_len, "max_tokens": cfg.max_tokens, "runs": []}
    if cfg.fidelity_tokens:
        result["fidelity"] = fidelity(model, cfg.prompt_len, cfg.fidelity_tokens, cfg.seed)
    for kind in engines:
        if kind in ("fast", "fast-slots", "plain"):
            options = EngineOptions(max_num_seqs=max(concurrency), max_model_len=cfg.prompt_len + cfg.max_tokens + 1,
                                    max_batched_tokens=max(concurrency) * cfg.prompt_len, engine=kind.removesuffix("-slots"),
                                    kv_cache="slots" if kind == "fast-slots" else "auto",
                                    enforce_eager=cfg.enforce_eager, max_queue=max(concurrency))
            engine = Engine(model, tokenizer, [], options)
            run_engine(engine, prompts[:2], 4)  # warm-up (allocator, cuBLAS heuristics)
            for n in concurrency:
                result["runs"].append({"engine": kind, "concurrency": n, **run_engine(engine, prompts[:n], cfg.max_tokens)})
            del engine
        else:
            if kind == "hf":
                run_hf(model, prompts[:1], 2, 1)  # warm-up
            for n in concurrency:
                try:
                    timing = run_hf(model, prompts[:n], cfg.max_tokens, min(n, cfg.hf_batch)) if kind == "hf" else \
                        run_hf_cb(model, prompts[:n], cfg.max_tokens)
                except Exception as exc:  # report and go on: the other engines' numbers still count
                    timing = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                result["runs"].append({"engine": kind, "concurrency": n, **timing})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if cfg.shared_prefix:
        result["shared_prefix"] = shared_prefix(model, tokenizer, cfg, concurrency, vocab)
    if cfg.speculative:
        result["speculative"] = speculative(model, tokenizer, cfg)
    if cfg.long_prompt:
        result["long_prompt"] = long_prompt(model, tokenizer, cfg, concurrency, vocab)
    _report(result)
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


def shared_prefix(model, tokenizer, cfg: BenchEngineConfig, concurrency: list[int], vocab: int) -> list[dict[str, Any]]:
    """For each N: N requests = one common prefix + their own tokens, at once; prefix caching on vs off."""
    from swiftkit.serve.engine.engine import Engine, EngineOptions

    gen = torch.Generator().manual_seed(cfg.seed + 2)
    prefix = torch.randint(0, vocab, (cfg.shared_prefix,), generator=gen).tolist()
    own = torch.randint(0, vocab, (max(concurrency), cfg.prompt_len), generator=gen).tolist()
    warm = torch.randint(0, vocab, (2, cfg.shared_prefix + cfg.prompt_len), generator=gen).tolist()
    width = cfg.shared_prefix + cfg.prompt_len
    runs = []
    for n in concurrency:
        row: dict[str, Any] = {"concurrency": n, "prefix": cfg.shared_prefix, "own": cfg.prompt_len}
        for caching in (True, False):
            options = EngineOptions(max_num_seqs=n, max_model_len=width + cfg.max_tokens + 1, max_batched_tokens=n * width,
                                    max_queue=n, engine="fast", kv_cache="paged", prefix_caching=caching)
            engine = Engine(model, tokenizer, [], options)
            run_engine(engine, warm, 4)  # warm-up on other tokens: the measured burst starts with a cold cache
            row["on" if caching else "off"] = run_engine(engine, [prefix + p for p in own[:n]], cfg.max_tokens)
            del engine
        row["ttft_ratio"] = row["on"]["ttft_p50_ms"] / row["off"]["ttft_p50_ms"]
        row["tok_s_ratio"] = row["on"]["tok_s"] / row["off"]["tok_s"]
        runs.append(row)
    return runs


def long_prompt(model, tokenizer, cfg: BenchEngineConfig, concurrency: list[int], vocab: int) -> list[dict[str, Any]]:
    """For each N: N streams decoding when one --long-prompt prompt arrives; chunked vs whole prefill vs none."""
    from swiftkit.serve.engine.engine import Engine, EngineOptions

    gen = torch.Generator().manual_seed(cfg.seed + 3)
    long = torch.randint(0, vocab, (cfg.long_prompt,), generator=gen).tolist()
    runs = []
    for n in concurrency:
        streams = torch.randint(0, vocab, (n, cfg.prompt_len), generator=gen).tolist()
        row: dict[str, Any] = {"concurrency": n, "long_prompt": cfg.long_prompt, "chunk": cfg.prefill_chunk}
        # A pool of what the run holds at most (a block of slack per sequence, 2 % for the admission watermark),
        # not the slots × max length default: on a GPU that takes most free memory, and the 30k-token prefill needs some.
        live = int(1.02 * (n * (cfg.prompt_len + cfg.max_tokens + 16) + cfg.long_prompt + 32))
        for key, chunk, arriving in (("none", 0, None), ("chunked", cfg.prefill_chunk, long), ("whole", 0, long)):
            options = EngineOptions(max_num_seqs=n + 1, max_model_len=max(cfg.long_prompt, cfg.prompt_len) + cfg.max_tokens + 1,
                                    max_queue=n + 1, engine="fast", kv_cache="paged", max_prefill_chunk=chunk,
                                    kv_cache_memory=kv_gib(model, live))
            engine = Engine(model, tokenizer, [], options)
            run_engine(engine, streams[:2], 4)  # warm-up
            row[key] = stream_latency(engine, streams, arriving, cfg.max_tokens)
            del engine
        for key in ("chunked", "whole"):
            row[f"{key}_p99_ratio"] = row[key]["itl_p99_entering_ms"] / row["none"]["itl_p99_ms"]
        row["chunked_whole_p99_ratio"] = row["chunked"]["itl_p99_entering_ms"] / row["whole"]["itl_p99_entering_ms"]
        runs.append(row)
    return runs


def kv_gib(model, tokens: int) -> float:
    """GiB of keys and values for `tokens` positions of this model."""
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).element_size()
    return per_token * tokens / 2**30


def stream_latency(engine, streams: list[list[int]], long: list[int] | None, max_tokens: int) -> dict[str, float]:
    """The streams' gaps between tokens (a step's outputs are delivered together at its end) once every stream
    has started (admitting them is not what this measures), with `long` submitted when the first stream also has
    a quarter of its tokens: over the rest of the run, and over the steps from its arrival to its first token
    (where a whole-prompt prefill's one stall is not hidden among the other gaps)."""
    from swiftkit.serve.engine.request import Request, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    stamps: list[list[tuple[float, int]]] = [[] for _ in streams]  # (time, step) of each token
    for i, p in enumerate(streams):
        engine.submit(Request(list(p), params, sink=lambda o, i=i: o.token_ids and stamps[i].append(
            (time.perf_counter(), engine.steps))))
    arrived, first = [], []  # (time, step after which it was submitted), (time, step) of its first token

    def arrive() -> None:
        if long is not None and not arrived and all(stamps) and len(stamps[0]) >= max_tokens // 4:
            arrived.append((time.perf_counter(), engine.steps))
            engine.submit(Request(list(long), SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True),
                                  sink=lambda o: o.token_ids and not first and first.append((time.perf_counter(), engine.steps))))

    engine.drain(arrive)
    started = max(s[0][1] for s in stamps)
    gaps = [(b - a, step) for s in stamps for (a, _), (b, step) in zip(s, s[1:], strict=False) if step > started]
    result = {f"itl_{name}_ms": 1000 * percentile([g for g, _ in gaps], q) for name, q in (("p50", 0.5), ("p99", 0.99))}
    result["itl_max_ms"] = 1000 * max(g for g, _ in gaps)
    result["preemptions"] = engine.preemptions  # 0 unless the pool was too small (it would skew the latencies)
    if first:
        entering = [g for g, step in gaps if arrived[0][1] < step <= first[0][1]]
        result["itl_p99_entering_ms"] = 1000 * percentile(entering, 0.99)
        result["long_ttft_ms"] = 1000 * (first[0][0] - arrived[0][0])
    return result


REPEAT_TEXT = (
    "The committee met on Tuesday to review the harbour project. Construction of the northern pier is six weeks "
    "behind schedule because the steel delivery arrived late, and the contractor has asked for an extension until "
    "the end of March. The southern pier is on time. The budget remains within the approved limit, although the "
    "cost of concrete has risen by four percent since the last meeting. The committee agreed to grant the "
    "extension, to publish a revised timetable next week, and to meet again on the first Monday of next month."
)


SPEC_WORKLOADS = {  # prompt-lookup speculative decoding pays on the first, and must not lose on the second
    "repeat": f"Repeat the following text exactly, but write Wednesday instead of Tuesday:\n\n{REPEAT_TEXT}",
    "free text": "Write a short story about a cat who learns to play the piano.",
}


def speculative(model, tokenizer, cfg: BenchEngineConfig) -> list[dict[str, Any]]:
    """One stream on each SPEC_WORKLOADS prompt: prompt-lookup speculative decoding on vs off, same paged engine
    settings; the greedy tokens must be identical."""
    from swiftkit.serve.engine.engine import Engine, EngineOptions
    from swiftkit.serve.engine.request import Request, SamplingParams

    rows = []
    for workload, ask in SPEC_WORKLOADS.items():
        try:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": ask}], add_generation_prompt=True,
                                                   tokenize=True, return_dict=True)["input_ids"]
        except Exception:  # no chat template
            prompt = tokenizer(ask)["input_ids"]
        row: dict[str, Any] = {"workload": workload, "prompt_tokens": len(prompt), "draft_tokens": cfg.speculative}
        outputs = {}
        for k in (cfg.speculative, 0):
            options = EngineOptions(max_num_seqs=1, max_model_len=len(prompt) + cfg.max_tokens + 1, engine="fast",
                                    kv_cache="paged", speculative_tokens=k)
            engine = Engine(model, tokenizer, [], options)
            run_engine(engine, [prompt[:16]], 4)  # warm-up
            tokens: list[int] = []
            params = SamplingParams(max_tokens=cfg.max_tokens, temperature=0.0, ignore_eos=True)
            engine.submit(Request(list(prompt), params, sink=lambda o, tokens=tokens: tokens.extend(o.token_ids)))
            start = time.perf_counter()
            engine.drain()
            seconds = time.perf_counter() - start
            key = "on" if k else "off"
            row[key] = {"tok_s": len(tokens) / seconds, "seconds": seconds, "steps": engine.steps,
                        "accepted": engine.spec_accepted, "drafted": engine.spec_drafted}
            outputs[key] = tokens
            del engine
        row["identical"] = outputs["on"] == outputs["off"]
        row["speedup"] = row["on"]["tok_s"] / row["off"]["tok_s"]
        rows.append(row)
    return rows


def _report(result: dict[str, Any]) -> None:
    base = {r["concurrency"]: r["tok_s"] for r in result["runs"] if r["engine"] == "hf" and "tok_s" in r}
    lines = ["| engine | concurrency | tok/s | × hf | TTFT ms | step p50 / p99 ms | KV GiB |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['engine']} | {r['concurrency']} | failed: {r['error']} | | | | |")
            continue
        ratio = f"{r['tok_s'] / base[r['concurrency']]:.1f}" if r["concurrency"] in base else ""
        ttft = f"{r['ttft_ms']:.0f}" if "ttft_ms" in r else ""
        itl = f"{r['itl_p50_ms']:.2f} / {r['itl_p99_ms']:.2f}" if "itl_p50_ms" in r else ""
        kv = f"{r['kv_gib']:.3f}" if "kv_gib" in r else ""
        lines.append(f"| {r['engine']} | {r['concurrency']} | {r['tok_s']:.1f} | {ratio} | {ttft} | {itl} | {kv} |")
    out.print("\n".join(lines))
    if result.get("shared_prefix"):
        lines = ["shared prefix (all at once, cold cache), prefix caching on vs off:",
                 "| concurrency | prefix + own | TTFT p50 on / off ms | ratio | tok/s on / off | ratio |", "|---|---|---|---|---|---|"]
        for r in result["shared_prefix"]:
            on, off = r["on"], r["off"]
            lines.append(f"| {r['concurrency']} | {r['prefix']} + {r['own']} | {on['ttft_p50_ms']:.0f} / {off['ttft_p50_ms']:.0f} | "
                         f"{r['ttft_ratio']:.2f} | {on['tok_s']:.1f} / {off['tok_s']:.1f} | {r['tok_s_ratio']:.2f} |")
        out.print("\n".join(lines))
    if result.get("long_prompt"):
        lines = ["long prompt mid-run: the running streams' inter-token latency with no long prompt / chunked prefill / "
                 "whole-prompt prefill (p99 entering: over the steps from its arrival to its first token):",
                 "| streams | long prompt | chunk | ITL p50 ms | ITL p99 ms | ITL p99 entering ms | ITL max ms | "
                 "p99 entering ÷ p99 none: chunked, whole | chunked ÷ whole | long prompt TTFT s: chunked / whole |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["long_prompt"]:
            runs = [r[k] for k in ("none", "chunked", "whole")]
            cols = [" / ".join(f"{x[f'itl_{q}_ms']:.1f}" for x in runs) for q in ("p50", "p99")]
            cols.append(" / ".join(f"{x['itl_p99_entering_ms']:.1f}" for x in runs[1:]))
            cols.append(" / ".join(f"{x['itl_max_ms']:.1f}" for x in runs))
            lines.append(f"| {r['concurrency']} | {r['long_prompt']} | {r['chunk']} | {' | '.join(cols)} | "
                         f"{r['chunked_p99_ratio']:.2f}, {r['whole_p99_ratio']:.2f} | {r['chunked_whole_p99_ratio']:.2f} | "
                         f"{r['chunked']['long_ttft_ms'] / 1000:.2f} / {r['whole']['long_ttft_ms'] / 1000:.2f} |")
        out.print("\n".join(lines))
    if "fidelity" in result:
        f = result["fidelity"]
        lines = [f"logits on fixed tokens ({f['positions']} positions, logit std {f['logit_std']:.3g}):",
                 "| compared | max abs diff | mean per-position max | KL max | KL mean | argmax agree |", "|---|---|---|---|---|---|"]
        for key, label in (("fast_vs_eager", "fast vs transformers"), ("eager_vs_fp32", "transformers vs fp32"),
                           ("fast_vs_fp32", "fast vs fp32")):
            if key in f:
                c = f[key]
                lines.append(f"| {label} | {c['max_abs_logit_diff']:.3g} | {c['mean_max_abs_logit_diff']:.3g} | "
                             f"{c['kl_max']:.2e} | {c['kl_mean']:.2e} | {c['argmax_agreement']:.3f} |")
        out.print("\n".join(lines))
    for r in result.get("speculative", []):
        on, off = r["on"], r["off"]
        out.print(f"speculative decoding (prompt lookup, up to {r['draft_tokens']} draft tokens; one stream, {r['workload']}, "
                  f"{r['prompt_tokens']}-token prompt): {on['tok_s']:.1f} vs {off['tok_s']:.1f} tok/s without "
                  f"({r['speedup']:.2f}x), {on['accepted']} of {on['drafted']} draft tokens accepted, greedy tokens "
                  f"{'identical' if r['identical'] else 'DIFFERENT'}")
