"""Configs of `swiftkit import` and `swiftkit export` (light module: no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from swiftkit.config import StageConfig, positional

# llama.cpp quant types `export` writes: f16/bf16/q8_0 straight from the converter, the rest by
# llama.cpp's quantizer from the f16 file (names as llama-quantize spells them, lower case).
EXPORT_QUANTS = ("f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q4_0", "q3_k_m", "q2_k")


class ImportConfig(StageConfig):
    gguf: str = positional(description="The .gguf file to import (dequantized into a safetensors model artifact).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the dequantized weights (float32 keeps the GGUF's values exactly)."
    )


class ExportConfig(StageConfig):
    model: str = Field(..., description="Model or adapter artifact, HF directory, .gguf or hub id (adapters are merged first).")
    format: Literal["gguf", "ollama"] = Field(
        "gguf", description="gguf, or ollama (the GGUFs plus a Modelfile for `ollama create` on the first --quant)."
    )
    quant: list[str] = Field(
        default_factory=lambda: ["q4_k_m"],
        description=f"llama.cpp quant types to write, one file each: {', '.join(EXPORT_QUANTS)}.",
    )
    verify_prompts: int = Field(8, ge=1, le=64, description="Fixed prompts whose greedy tokens llama.cpp must reproduce.")
    verify_tokens: int = Field(16, ge=1, le=256, description="Greedy tokens generated per verification prompt.")
    max_ppl_increase: float | None = Field(
        None, gt=0, description="Fail an export whose llama.cpp perplexity exceeds the source's by more than this fraction (0.1 = 10 %).",
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the model repo.")
    llama_cpp: str | None = Field(
        None, description="A llama.cpp source checkout to convert with (default: the one vendored by the installed llama-cpp-python)."
    )
