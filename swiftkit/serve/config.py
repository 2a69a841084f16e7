"""Configs of `swiftkit serve`, `infer` and `chat` (light module: no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from swiftkit.config import CommandConfig, positional
from swiftkit.train.config import ModelOptions


class EngineConfig(ModelOptions):
    """What every command that generates through the built-in engine shares."""

    max_model_len: int | None = Field(
        None, ge=1, description="Context length (prompt + output); default: the model's own, capped at 4096.",
        json_schema_extra={"flags": ["--max-length"]},
    )
    max_num_seqs: int = Field(32, ge=1, description="Sequences decoded together in one batch (continuous batching).")
    max_queue: int = Field(256, ge=0, description="Requests allowed to wait for a slot; beyond this the server answers 429.")
    max_batched_tokens: int = Field(8192, ge=1, description="Token budget of one prefill batch (padded prompt tokens).")
    adapter: list[str] = Field(
        default_factory=list, description="LoRA adapter to serve next to the base: NAME=REF (repeatable).",
    )
    device: str | None = Field(None, description="Torch device (default: cuda if available, else cpu).")
    engine: Literal["auto", "fast", "plain", "vllm"] = Field(
        "auto", description="Generation engine: fast (swiftkit's own forward over a static KV cache, CUDA graphs on GPU; "
        "Qwen2/Llama family), plain (the transformers forward, any architecture, multi-LoRA), auto (fast where it "
        "applies, else plain, said in the log), vllm (vLLM's async engine behind swiftkit's server; needs vllm).",
    )
    enforce_eager: bool = Field(False, description="Never capture CUDA graphs (the fast engine on GPU captures decode steps).")
    kv_cache: Literal["auto", "paged", "slots"] = Field(
        "auto", description="The fast engine's KV cache: paged (a block pool, memory grows with live tokens, prefix "
        "caching, preemption instead of failure), slots (one max-length row per sequence; CUDA graphs + Triton), "
        "auto (paged on CPU, slots on CUDA).",
    )
    kv_cache_memory: float | None = Field(
        None, gt=0, description="GiB of the paged KV pool (default: what --max-num-seqs x --max-model-len need, "
        "at most 4 GiB on CPU / 90 % of free GPU memory).",
    )
    enable_prefix_caching: bool = Field(
        True, description="Paged KV: reuse the cached blocks of a shared prompt prefix (only the rest is prefilled).",
    )
    speculative_ngram: int = Field(
        0, ge=0, le=16, description="Paged KV: prompt-lookup speculative decoding, up to this many draft tokens a step, "
        "verified in one forward; used when every running request is greedy without logprobs (0: off).",
    )
    max_prefill_chunk: int = Field(
        256, ge=0, description="Paged KV (chunked prefill): prompt tokens computed per engine step at most; a longer "
        "prompt enters in chunks between the running requests' decode steps instead of stalling them for its whole "
        "prefill (smaller: steadier streams, slower long prompts; 0: whole prompts).",
    )


class DeploymentModel(EngineConfig):
    """One entry of a deployment's `models:` list: today's per-model serve flags, plus replicas."""

    served_model_name: str | None = Field(None, description="Name clients use for this model (default: the model reference).")
    embedding_model: str | None = Field(None, description="Separate model for /v1/embeddings requests naming this model.")
    replicas: int = Field(1, ge=1, le=64, description="Engine processes of this model; requests go to the least loaded.")

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


class ServeConfig(EngineConfig):
    model: str | None = Field(
        None, description="Model reference: artifact dir, HF model dir, .gguf file, or hub id (several models: "
        "a `models:` list in --config, docs/serve.md).",
    )
    models: list[DeploymentModel] = Field(
        default_factory=list, description="Several models behind one endpoint (YAML only, --config): each entry "
        "takes --model, --adapter, --device and the engine options, plus served_model_name and replicas.",
        json_schema_extra={"yaml_only": True},
    )
    ui: bool = Field(True, description="Serve the web playground at / (--no-ui: off).")
    adapter_dir: list[str] = Field(
        default_factory=list, description="A directory LoRA adapters may be loaded from at run time "
        "(POST /v1/load_lora_adapter with the admin key; repeatable); paths outside every such directory are refused.",
    )
    watch_adapters: bool = Field(
        False, description="Serve each adapter folder inside the --adapter-dir directories under its folder name: "
        "new folders are loaded and removed ones unloaded while the server runs.",
    )
    served_model_name: str | None = Field(None, description="Name clients use for the base model (default: the model reference).")
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    api_key: str | None = Field(None, description="Require `Authorization: Bearer KEY` on /v1 routes (/health stays open).")
    allow_ip: list[str] = Field(
        default_factory=list, description="Only clients from this address or network (CIDR) may call the API "
        "routes (repeatable; /health and /metrics stay open); others get 403.",
    )
    admin_key: str | None = Field(None, description="Key for the admin routes (/v1/admin/...); accepted on every route.")
    database: str | None = Field(
        None, description="Tenant keys and the usage log: a SQLite file path or a SQLAlchemy URL "
        "(postgresql+psycopg://...). With it, tenant keys (`swiftkit keys create`) are accepted and every request is recorded.",
    )
    guard: list[str] = Field(
        default_factory=list, description="A guard hook `module:function` run on each request and non-streamed "
        "response: pass, rewrite, or reject with a 400 (repeatable; docs/serve.md, Guards).",
    )
    blocklist: list[str] = Field(
        default_factory=list, description="A regular expression (case-insensitive) that refuses a request or "
        "non-streamed response whose text matches, with a 400 (repeatable).",
    )
    audit_content: bool = Field(False, description="Also record each request's messages/prompt and the generated text.")
    audit_buffer: int = Field(
        10000, ge=1, description="Usage rows held in memory while the database catches up; beyond, rows are dropped and counted.",
    )
    embedding_model: str | None = Field(None, description="Separate model for /v1/embeddings (default: mean-pooled served model).")
    tool_parser: Literal["auto", "hermes", "llama3_json", "none"] = Field(
        "auto", description="How tool calls are read from model output (auto: from the chat template).",
    )
    engine_process: bool = Field(
        True, description="Run the engine in its own process (its own interpreter, so HTTP streaming does not "
        "compete with decoding for the GIL); --no-engine-process runs it on a thread of the server.",
    )
    drain_timeout: float = Field(30.0, ge=0, description="On SIGTERM, seconds to let in-flight requests finish (new ones get 503).")
    log_requests: bool = Field(False, description="Log every HTTP request (uvicorn access log).")
    # Request size limits: each bounds what one request can cost everyone else (docs/serve.md, "Limits").
    max_request_bytes: int = Field(8 * 2**20, ge=1, description="Largest request body in bytes (413 beyond).")
    max_stop: int = Field(16, ge=0, description="Most `stop` strings in one request.")
    max_stop_chars: int = Field(256, ge=1, description="Longest `stop` string, in characters.")
    max_schema_bytes: int = Field(
        65536, ge=1, description="Largest `response_format` JSON schema, and largest `tools` list, as JSON bytes.",
    )
    max_logit_bias: int = Field(1024, ge=0, description="Most `logit_bias` entries in one request.")
    max_request_tokens: int = Field(
        262144, ge=1, description="Most tokens one request may ask for: n x max_tokens, summed over its prompts.",
    )
    tokenizer_threads: int = Field(
        2, ge=1, description="Threads that tokenize prompts and compile grammars, off the event loop.",
    )

    @model_validator(mode="after")
    def _one_model_source(self):
        if self.models and self.model:
            raise ValueError("give either --model or a `models:` list in --config, not both")
        if not self.models and not self.model:
            raise ValueError("--model is required (or a `models:` list in --config)")
        if self.adapter_dir and (self.models or self.engine == "vllm"):
            raise ValueError("--adapter-dir (adapters loaded at run time) needs a single model on the built-in engine "
                             "(not a `models:` list, not --engine vllm)")
        if self.watch_adapters and not self.adapter_dir:
            raise ValueError("--watch-adapters watches the --adapter-dir directories: give at least one")
        return self


class InferConfig(EngineConfig):
    data: str = Field(..., description="Prompts file (.jsonl): rows with `messages`, `prompt` or `question` (+ optional `id`).")
    output: str | None = Field(None, description="Results .jsonl (default: <data stem>.results.jsonl); existing ids are skipped.")
    max_tokens: int = Field(256, ge=1, description="Max new tokens per row.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    system: str | None = Field(None, description="System prompt added to chat rows that have none.")


class ChatConfig(EngineConfig):
    max_tokens: int = Field(512, ge=1, description="Max new tokens per reply.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    system: str | None = Field(None, description="System prompt.")


class DatabaseOption(CommandConfig):
    database: str = Field("swiftkit.db", description="The server's --database: a SQLite file path or a SQLAlchemy URL.")


class KeysCreateConfig(DatabaseOption):
    tenant: str = Field(..., min_length=1, description="Who the key belongs to (usage is reported per tenant).")
    allow_model: list[str] = Field(
        default_factory=list, description="A model (or adapter) name the key may use (repeatable; default: every model).",
    )
    rpm: int | None = Field(None, ge=1, description="Requests per minute (default: unlimited).")
    tpm: int | None = Field(None, ge=1, description="Tokens (prompt + completion) per minute (default: unlimited).")
    quota_tokens: int | None = Field(None, ge=1, description="Tokens per --quota-period (default: unlimited).")
    quota_period: Literal["day", "month"] = Field("month", description="The quota's period, a UTC calendar day or month.")
    expires: str | None = Field(None, description="Expiry: a date or time (UTC, ISO 8601, e.g. 2027-01-31) or a duration (30d, 12h).")
    admin: bool = Field(False, description="The key may also call the admin routes (/v1/admin/...).")


class KeysListConfig(DatabaseOption):
    tenant: str | None = Field(None, description="Only this tenant's keys.")
    format: Literal["table", "json", "csv"] = Field("table", description="Output format.")


class KeysRevokeConfig(DatabaseOption):
    key_id: str = positional(description="The key's id (`swiftkit keys list`), e.g. key_3f2a9c01b7d4.")


class UsageConfig(DatabaseOption):
    since: str | None = Field(None, description="First UTC day (YYYY-MM-DD) to report (default: all).")
    until: str | None = Field(None, description="Last UTC day (YYYY-MM-DD) to report, included.")
    tenant: str | None = Field(None, description="Only this tenant.")
    format: Literal["table", "json", "csv"] = Field("table", description="Output format.")
