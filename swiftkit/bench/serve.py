"""`swiftkit bench serve`: closed-loop load on an OpenAI endpoint, plus the in-process ceiling.

Every request streams with `ignore_eos` so it produces exactly --max-tokens tokens; the client counts
tokens from the final usage chunk (content chunks where a server sends none), takes TTFT at the first
content chunk and inter-token latency (ITL) between chunks. The baseline runs the same prompts through one padded batched
`model.generate` per --concurrency prompts, in this process, after the load test — the practical
ceiling for a server doing the same work on the same machine — and through swiftkit's engine in
this process without HTTP (which separates engine cost from HTTP/streaming cost).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from swiftkit.bench.config import BenchServeConfig
from swiftkit.console import console, out
from swiftkit.errors import SwiftkitError


def prompts(n: int, tokens: int | None = None) -> list[str] | list[list[int]]:
    """Distinct short questions, or token-id prompts of a fixed length (the same for server and baseline)."""
    if tokens:
        # ids 10..399: inside any tokenizer's vocabulary, the toy's 512 included
        return [[10 + (7 * i + 13 * j) % 390 for j in range(tokens)] for i in range(n)]
    return [f"What is {10 + (7 * i) % 90} + {11 + (13 * i) % 89}?" for i in range(n)]


@dataclass
class Sample:
    ttft: float
    itls: list[float] = field(default_factory=list)
    tokens: int = 0
    latency: float = 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def one_request(client: httpx.AsyncClient, cfg: BenchServeConfig, model: str, prompt: str) -> Sample:
    if cfg.endpoint == "chat":
        path, body = "/chat/completions", {"messages": [{"role": "user", "content": prompt}]}
    else:
        path, body = "/completions", {"prompt": prompt}
    # skip_special_tokens=False: every token has text, so every token is a chunk (TTFT/ITL per token).
    body.update(model=model, max_tokens=cfg.max_tokens, temperature=0, stream=True, ignore_eos=True,
                skip_special_tokens=False, stream_options={"include_usage": True})
    start = time.perf_counter()
    last = None
    sample = Sample(ttft=float("nan"))
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            raise SwiftkitError(f"server answered {r.status_code}: {(await r.aread()).decode()[:300]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter()
            chunk = json.loads(line[6:])
            if chunk.get("usage") and not chunk.get("choices"):
                sample.tokens = chunk["usage"]["completion_tokens"]
                continue
            choice = chunk["choices"][0]
            text = choice.get("text") if cfg.endpoint == "completions" else choice.get("delta", {}).get("content")
            if not text:
                continue
            if last is None:
                sample.ttft = now - start
            else:
                sample.itls.append(now - last)
            last = now
    sample.latency = time.perf_counter() - start
    if not sample.tokens and last is not None:  # a server that sends no usage (llama-cpp-python's): one token a chunk
        sample.tokens = len(sample.itls) + 1
    return sample


async def load(cfg: BenchServeConfig, base: str, model: str) -> tuple[list[Sample], float]:
    todo = list(enumerate(prompts(cfg.requests, cfg.prompt_tokens)))
    samples: list[Sample] = []
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    limits = httpx.Limits(max_connections=cfg.concurrency + 4)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600, limits=limits) as client:
        async def worker() -> None:
            while todo:
                _, prompt = todo.pop(0)
                samples.append(await one_request(client, cfg, model, prompt))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
        return samples, time.perf_counter() - start


def baseline(cfg: BenchServeConfig) -> float:
    """Output tok/s of padded batched `generate` over the same prompts, --concurrency per batch."""
    import torch

    from swiftkit.loading import load_model

    model, tok, _ = load_model(cfg.baseline_model, dtype=cfg.dtype)
    tok.padding_side = "left"
    texts = prompts(cfg.requests)
    if cfg.endpoint == "chat":
        texts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
                 for t in texts]
    batches = [texts[i:i + cfg.concurrency] for i in range(0, len(texts), cfg.concurrency)]
    encoded = [tok(b, return_tensors="pt", padding=True, add_special_tokens=cfg.endpoint != "chat") for b in batches]
    generated = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for enc in encoded:
            result = model.generate(**enc, max_new_tokens=cfg.max_tokens, min_new_tokens=cfg.max_tokens,
                                    do_sample=False, pad_token_id=tok.pad_token_id)
            generated += (result.shape[1] - enc["input_ids"].shape[1]) * result.shape[0]
    return generated / (time.perf_counter() - start)


def engine_baseline(cfg: BenchServeConfig) -> float:
    """Output tok/s of the same prompts through swiftkit's engine in this process (no HTTP)."""
    import queue

    from swiftkit.serve.config import EngineConfig
    from swiftkit.serve.engine.engine import Engine
    from swiftkit.serve.engine.request import Request, SamplingParams
    from swiftkit.serve.model import load_served_model

    ecfg = EngineConfig(model=cfg.baseline_model, dtype=cfg.dtype, max_num_seqs=cfg.concurrency)
    served = load_served_model(ecfg)
    texts = prompts(cfg.requests)
    if cfg.endpoint == "chat":
        ids = [served.encode(served.render_chat([{"role": "user", "content": t}]), False) for t in texts]
    else:
        ids = [served.encode(t, True) for t in texts]
    engine = served.build_engine(ecfg, engine_cls=Engine)
    engine.start()
    done: queue.SimpleQueue = queue.SimpleQueue()
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=0, ignore_eos=True)
    start = time.perf_counter()
    pending = list(ids)
    for _ in range(min(cfg.concurrency, len(pending))):  # closed loop, like the HTTP load
        engine.submit(Request(pending.pop(0), params, sink=done.put))
    generated = finished = 0
    while finished < len(ids):
        out = done.get()
        generated += len(out.token_ids)
        if out.finished:
            finished += 1
            if pending:
                engine.submit(Request(pending.pop(0), params, sink=done.put))
    elapsed = time.perf_counter() - start
    engine.stop()
    return generated / elapsed


def run(cfg: BenchServeConfig) -> None:
    if cfg.prompt_tokens and (cfg.endpoint != "completions" or cfg.baseline_model):
        raise SwiftkitError("--prompt-tokens needs --endpoint completions and no --baseline-model",
                            "token-id prompts exist only on /v1/completions; use `swiftkit bench engine` for in-process baselines")
    base = cfg.url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    try:
        listed = httpx.get(base + "/models", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise SwiftkitError(f"cannot reach {base}: {exc}", "start the server first (swiftkit serve ...)") from None
    if listed.status_code != 200:
        raise SwiftkitError(f"{base}/models answered {listed.status_code}", "check --url and --api-key")
    model = cfg.model or listed.json()["data"][0]["id"]
    console.print(f"[bold]bench serve[/] {base} model={model} concurrency={cfg.concurrency} "
                  f"requests={cfg.requests} max_tokens={cfg.max_tokens}")
    samples, elapsed = asyncio.run(load(cfg, base, model))
    tokens = sum(s.tokens for s in samples)
    itls = [x for s in samples for x in s.itls]
    result = {
        "url": base, "model": model, "concurrency": cfg.concurrency, "requests": len(samples),
        "max_tokens": cfg.max_tokens, "endpoint": cfg.endpoint, "seconds": elapsed,
        "output_tok_s": tokens / elapsed, "req_s": len(samples) / elapsed,
        "ttft_p50_ms": 1000 * percentile([s.ttft for s in samples], 0.5),
        "ttft_p99_ms": 1000 * percentile([s.ttft for s in samples], 0.99),
        "itl_p50_ms": 1000 * percentile(itls, 0.5), "itl_p99_ms": 1000 * percentile(itls, 0.99),
        "latency_mean_s": statistics.fmean(s.latency for s in samples),
    }
    if cfg.baseline_model:
        result["baseline_generate_tok_s"] = baseline(cfg)
        result["ratio_to_baseline"] = result["output_tok_s"] / result["baseline_generate_tok_s"]
        result["engine_in_process_tok_s"] = engine_baseline(cfg)
    rows = [
        ("output tok/s", f"{result['output_tok_s']:.0f}"), ("requests/s", f"{result['req_s']:.2f}"),
        ("TTFT p50 / p99 (ms)", f"{result['ttft_p50_ms']:.1f} / {result['ttft_p99_ms']:.1f}"),
        ("ITL p50 / p99 (ms)", f"{result['itl_p50_ms']:.2f} / {result['itl_p99_ms']:.2f}"),
        ("tokens", tokens), ("time (s)", f"{elapsed:.2f}"),
    ]
    if cfg.baseline_model:
        rows += [("in-process padded generate tok/s", f"{result['baseline_generate_tok_s']:.0f}"),
                 ("server / generate", f"{result['ratio_to_baseline']:.2f}"),
                 ("swiftkit engine in-process (no HTTP) tok/s", f"{result['engine_in_process_tok_s']:.0f}")]
    out.print("\n".join(f"| {k} | {v} |" for k, v in [("metric", "value"), ("---", "---"), *rows]))
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(result, indent=2) + "\n")
