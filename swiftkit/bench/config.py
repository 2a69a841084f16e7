"""Config of `swiftkit bench serve` (light module: no torch import)."""

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
    baseline_model: str | None = Field(
        None, description="Also time an in-process padded batched `generate` of the same prompts on this model (the ceiling).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Baseline model dtype.")
    output: str | None = Field(None, description="Also write the results as JSON to this file.")
