"""Config of `swiftkit bench train` (light module: no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from swiftkit.config import CommandConfig


class BenchTrainConfig(CommandConfig):
    model_config_name: str = Field(
        "qwen2.5-1.5b",
        description="qwen2.5-1.5b, qwen2.5-7b or toy (random-init architectures), or a model dir / reference (its weights).",
        json_schema_extra={"flags": ["--model-config"]},
    )
    data: list[str] = Field(
        default_factory=list,
        description="SFT data (as `swiftkit sft --data`) whose token lengths to use; default: the committed Alpaca length histogram.",
    )
    tokenizer: str | None = Field(None, description="Tokenizer (model reference) for --data (default: --model-config when it is a model).")
    padded_batch: int = Field(32, description="Rows per step of the plain padded path.")
    batch_size: int | None = Field(
        None, description="swiftkit path: packed bins per step (default: as `swiftkit sft`, 8192 tokens a step on CUDA, 4 bins elsewhere)."
    )
    max_length: int = Field(1024, description="swiftkit path: tokens per bin (as `swiftkit sft --max-length`).")
    steps: int = Field(10, description="Timed steps per path (at least).")
    # 3 warm-up steps (the first GPU run) left the 7B's packed step 17 % slower than inside swiftkit sft.
    warmup: int = Field(10, description="Untimed steps first (compiling FlexAttention for new block masks, allocator growth).")
    min_seconds: float = Field(0.0, description="Keep timing a path at least this long (up to 4x --steps).")
    lora_r: int = Field(16, description="LoRA rank (alpha = 2r, all linear layers), both paths.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype (auto: bf16 on GPU, fp32 on CPU).")
    seed: int = Field(0, description="Random seed (lengths, token ids, LoRA init).")
    output: str | None = Field(None, description="Also write the results as JSON to this file.")
