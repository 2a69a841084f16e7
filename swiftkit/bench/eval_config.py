"""Config of `swiftkit bench eval` (light module: no torch / lm-eval import)."""

from __future__ import annotations

from pydantic import Field, field_validator

from swiftkit.config import CommandConfig
from swiftkit.train.config import Dtype


class BenchEvalConfig(CommandConfig):
    model: str = Field(..., description="Model reference to score (artifact, HF dir, hub id).")
    tasks: list[str] = Field(["mmlu", "gsm8k"], description="Tasks, as `swiftkit eval --tasks` (default mmlu,gsm8k).")
    backends: str = Field("hf,engine", description="Comma list of eval backends run one after the other; the first is the baseline.")
    data_dir: str | None = Field(None, description="Local task data, as `swiftkit eval --data-dir`.")
    limit: int | None = Field(10, description="Samples per task (per MMLU subject), the same rows for every backend.")
    num_fewshot: int | None = Field(None, description="Few-shot examples (default: each task's own, gsm8k 5).")
    max_gen_toks: int | None = Field(None, description="Cap on generated tokens (default: each task's own, gsm8k 256).")
    batch_size: int = Field(32, description="Requests per forward pass (hf, local) / running sequences (engine).")
    baseline_batch_size: int | None = Field(
        None, description="--batch-size of the first (baseline) backend only, e.g. what fits lm-eval's hf on this GPU "
        "(its MMLU log-softmax at 64 × 1k tokens × 152k vocabulary needs 131 GiB); default --batch-size.")
    chat: bool | None = Field(False, description="Apply the chat template (default off: base-model style prompts).")
    dtype: Dtype = Field("auto", description="Weights dtype (auto: bfloat16 on GPU, float32 on CPU).")
    device: str | None = Field(None, description="Device (default: cuda if available, else cpu).")
    workdir: str | None = Field(None, description="Keep the eval artifacts here (default: a temporary folder).")
    output: str | None = Field(None, description="Also write the results as JSON to this file.")

    @field_validator("tasks", mode="before")
    @classmethod
    def _split_commas(cls, value):
        values = [value] if isinstance(value, str) else value
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            return [part.strip() for v in values for part in v.split(",") if part.strip()]
        return value
