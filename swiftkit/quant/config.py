"""Config of `swiftkit quantize` (light module: no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from swiftkit.errors import SwiftkitError
from swiftkit.train.config import ModelStageConfig

Method = Literal["gptq", "awq", "bnb-nf4", "bnb-int8"]
# The bit widths each method can write in a layout that vLLM / SGLang / transformers read.
BITS = {"gptq": (4, 8), "awq": (4,), "bnb-nf4": (4,), "bnb-int8": (8,)}
# bitsandbytes reloads into the very kernel it quantized with (measured: bit-equal); GPTQModel reloads
# GPTQ/AWQ into its int4 ATen kernel, which rounds through bf16 (measured 0.5-1% relative RMS on the toy).
# A checkpoint that lost its quantized weights was off by 6-35% in the same measure.
LOGITS_TOLERANCE = {"gptq": 0.03, "awq": 0.03, "bnb-nf4": 0.001, "bnb-int8": 0.001}
# What each method writes; `compressed-tensors` is accepted only to explain why it is not offered.
FORMATS = {"gptq": "gptq", "awq": "awq-gemm", "bnb-nf4": "bitsandbytes", "bnb-int8": "bitsandbytes"}


class QuantizeConfig(ModelStageConfig):
    method: Method = Field("gptq", description="gptq, awq (both through GPTQModel), bnb-nf4 or bnb-int8 (bitsandbytes).")
    bits: int | None = Field(None, description="Weight bits (default: 4; gptq also takes 8; bnb-int8 is 8).")
    group_size: int | None = Field(
        None,
        description="Weights per group (gptq/awq; -1: one per row; default: largest of 128/64/32 dividing every input width).",
    )
    format: Literal["auto", "gptq", "awq-gemm", "bitsandbytes", "compressed-tensors"] = Field(
        "auto",
        description="Checkpoint layout (auto: the method's standard one; compressed-tensors: see docs).",
    )
    double_quant: bool = Field(
        False,
        description="bnb-nf4: also quantize the block scales (double quantization, ~0.4 bit/weight less).",
    )
    data: list[str] = Field(
        default_factory=list,
        description="Calibration data: .txt, or .jsonl/.json/.csv/.parquet text or chat rows; SRC#N: N rows.",
    )
    eval_data: list[str] = Field(
        default_factory=list,
        description="Held-out text for the perplexity check (default: rows kept out of calibration).",
    )
    n_samples: int = Field(128, description="Calibration samples (token windows) for gptq/awq.", gt=0)
    max_length: int = Field(2048, description="Max tokens per calibration sample and per perplexity window.", gt=0)
    eval_tokens: int = Field(8192, description="Held-out tokens scored for the perplexity check.", gt=0)
    max_ppl_increase: float = Field(
        0.25,
        description="Fail verification if perplexity exceeds the parent's by more than this fraction.",
        ge=0,
    )
    logits_tolerance: float | None = Field(
        None,
        gt=0,
        description="Max relative RMS between reloaded and in-memory logits (default: 0.03 gptq/awq, 0.001 bnb).",
    )

    @model_validator(mode="after")
    def _check_combination(self) -> QuantizeConfig:
        if self.bits is None:
            self.bits = 8 if self.method == "bnb-int8" else 4
        if self.bits not in BITS[self.method]:
            allowed = ", ".join(map(str, BITS[self.method]))
            raise SwiftkitError(f"--method {self.method} does not support --bits {self.bits}", f"use --bits {allowed}")
        if self.group_size is not None and (self.group_size == 0 or self.group_size < -1):
            raise SwiftkitError(
                f"--group-size {self.group_size} is invalid",
                "use a positive size such as 128, or -1 for per-row scales",
            )
        if self.format == "compressed-tensors":
            raise SwiftkitError(
                "--format compressed-tensors is not available: llm-compressor pins transformers<=5.17, which breaks this environment",
                "use --method gptq (vLLM and SGLang load its GPTQ layout natively); see docs/quantize.md",
            )
        if self.format not in ("auto", FORMATS[self.method]):
            raise SwiftkitError(f"--method {self.method} writes --format {FORMATS[self.method]}, not {self.format}")
        if self.format == "auto":
            self.format = FORMATS[self.method]
        if self.logits_tolerance is None:
            self.logits_tolerance = LOGITS_TOLERANCE[self.method]
        return self
