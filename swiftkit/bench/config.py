"""Configs of `swiftkit bench serve` and `bench engine` (light module: no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from swiftkit.config import CommandConfig


class BenchServeConfig(CommandConfig):
    url: str = Field("http://127.0.0.1:8000", description="Server base URL (with or without /v1).")
    model: str | None = Field(None, description="Model name to request (default: the first one /v1/models lists).")
    api_key: str | None = Field(None, description="Bearer key for the server.")
    concurrency: int = Field(16, description="Requests in flight at once (closed loop).")
    requests: int = Field(64, description="Total requests.")
    max_tokens: int = Field(64, description="Tokens generated per request (ignore_eos, so exactly this many).")
    endpoint: Literal["chat", "completions"] = Field("chat", description="Which API to load.")
    prompt_tokens: int | None = Field(
        None, description="Send prompts of exactly this many random token ids (completions endpoint) instead of short questions.",
    )
    baseline_model: str | None = Field(
        None, description="Also time an in-process padded batched `generate` of the same prompts on this model (the ceiling).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Baseline model dtype.")
    output: str | None = Field(None, description="Also write the results as JSON to this file.")


class BenchEngineConfig(CommandConfig):
    model_config_name: str = Field(
        "qwen2.5-1.5b",
        description="qwen2.5-1.5b, qwen2.5-7b or toy (random-init architectures, as `bench train`), or a model dir / reference.",
        json_schema_extra={"flags": ["--model-config"]},
    )
    engines: str = Field("fast,hf", description="Comma list of: fast, fast-slots (the fast engine with --kv-cache slots), "
                         "plain (swiftkit's engines), hf (`generate`), hf-cb (transformers' continuous batching).")
    concurrency: str = Field("1,64", description="Comma list of request counts run at once.")
    prompt_len: int = Field(128, description="Prompt tokens per request (random ids).")
    max_tokens: int = Field(256, description="New tokens per request (ignore_eos: exactly this many).")
    hf_batch: int = Field(32, description="Rows per padded `generate` batch for the hf engine.")
    fidelity_tokens: int = Field(64, description="Teacher-forced decode steps compared with one eager forward (0: skip).")
    enforce_eager: bool = Field(False, description="No CUDA graphs in the fast engine.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype (auto: bf16 on GPU, fp32 on CPU).")
    seed: int = Field(0, description="Seed of the random weights and prompts.")
    shared_prefix: int = Field(
        0, ge=0, description="Also run the shared-prefix workload: every request starts with the same this many tokens "
        "(then --prompt-len of its own), prefix caching on and off in the same run (fast engine, paged KV).",
    )
    speculative: int = Field(
        0, ge=0, le=16, description="Also run the input-grounded workload (one stream asked to repeat a text) with "
        "prompt-lookup speculative decoding of up to this many draft tokens, against the same engine without it.",
    )
    long_prompt: int = Field(
        0, ge=0, description="Also run the long-prompt-mid-run workload: --concurrency streams decode --max-tokens each "
        "and a prompt of this many tokens arrives once all have started and the first has a quarter; their inter-token "
        "latency with chunked prefill (--prefill-chunk), whole-prompt prefill and no long prompt, in one run (paged KV).",
    )
    prefill_chunk: int = Field(256, ge=1, description="The long-prompt workload's --max-prefill-chunk.")
    output: str | None = Field(None, description="Also write the results as JSON to this file.")
