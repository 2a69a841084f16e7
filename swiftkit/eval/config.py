"""Configs of `swiftkit eval` and `swiftkit compare` (light module: no torch / lm-eval import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from swiftkit.config import StageConfig, positional
from swiftkit.train.config import Dtype


def parse_thresholds(values: list[str]) -> dict[str, float]:
    """`task=score` pairs of --fail-under, validated with a message naming the bad one."""
    from swiftkit.errors import SwiftkitError

    parsed: dict[str, float] = {}
    for item in values:
        task, sep, score = item.partition("=")
        try:
            parsed[task.strip()] = float(score)
        except ValueError:
            sep = ""
        if not sep or not task.strip():
            raise SwiftkitError(f"--fail-under expects TASK=SCORE, got {item!r}", "e.g. --fail-under gsm8k=0.4")
    return parsed


class EvalConfig(StageConfig):
    model: list[str] = Field(
        default_factory=list,
        description="Model reference(s) to score (artifact, HF dir, hub id); repeat for a side-by-side run.",
    )
    url: str | None = Field(
        None,
        description="Score an OpenAI-compatible endpoint instead (base URL, e.g. http://127.0.0.1:8000/v1).",
    )
    api_key: str | None = Field(None, description="API key for --url (default: $OPENAI_API_KEY, else none).")
    served_model: str | None = Field(None, description="Model name to send to --url (default: the first one /v1/models lists).")
    tokenizer: str | None = Field(
        None,
        description="Tokenizer for --url (model ref / HF dir): for loglikelihood tasks and chat templates.",
    )
    tasks: list[str] = Field(
        default_factory=list,
        description="Tasks, comma-separated or repeated: toy_arithmetic, mmlu, gsm8k, ... or lm-eval names.",
    )
    num_fewshot: int | None = Field(None, description="Few-shot examples per prompt (default: each task's own).")
    limit: int | None = Field(
        None,
        description="Score only the first N samples per task (smoke runs; not comparable to published).",
    )
    batch_size: int = Field(32, description="Requests per forward pass (local backend) or concurrent requests (--url).")
    max_length: int | None = Field(None, description="Context length (default: the model's own).")
    max_gen_toks: int | None = Field(None, description="Cap on generated tokens for generation tasks (default: each task's own).")
    data_dir: str | None = Field(
        None,
        description="Local task data in each benchmark's release layout (docs/eval.md); default: the hubs.",
    )
    data: str | None = Field(None, description="jsonl of {question, answer} rows for the jsonl_qa task.")
    chat: bool | None = Field(
        None,
        description="Apply the model's chat template (default: on when the model has one, as training does).",
    )
    system_prompt: str | None = Field(None, description="System message put before every prompt.")
    allow_code_execution: bool = Field(False, description="Run model-written code for code tasks (humaneval) in a sandboxed subprocess.")
    fail_under: list[str] = Field(default_factory=list, description="TASK=SCORE: exit non-zero when a score is below it (CI gate).")
    dtype: Dtype = Field("auto", description="Weights dtype (auto: bfloat16 on GPU, float32 on CPU).")
    device: str | None = Field(None, description="Device for the local backend (default: cuda if available, else cpu).")
    trust_remote_code: bool = Field(False, description="Allow custom model code from the model repo.")
    backend: Literal["engine", "local", "hf"] = Field(
        "engine",
        description="engine: swiftkit's continuous-batching engine; local: lm-eval's HFLM on swiftkit's loading; hf: lm-eval's hf.",
    )

    @field_validator("tasks", mode="before")
    @classmethod
    def _split_commas(cls, value):
        """`--tasks a,b --tasks c` and YAML `tasks: a,b` alike."""
        values = [value] if isinstance(value, str) else value
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            return [part.strip() for v in values for part in v.split(",") if part.strip()]
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _one_or_more(cls, value):
        return [value] if isinstance(value, str) else value


class CompareConfig(StageConfig):
    artifacts: list[str] = positional(description="Eval artifacts (or evaluated model artifacts); the first is the baseline.")
    search: list[str] = Field(default_factory=list, description="Extra folders to search for the evals of model artifacts.")
    fail_under: list[str] = Field(default_factory=list, description="TASK=SCORE: exit non-zero when any column is below it.")
    max_drop: float | None = Field(None, description="Exit non-zero when any score falls more than this below the baseline.")
