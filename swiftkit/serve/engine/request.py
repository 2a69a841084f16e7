"""One generation request: its sampling parameters, its state while it runs, and what it emits."""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count()


@dataclass
class SamplingParams:
    """Per-request decoding options (the OpenAI ones plus vLLM's usual extras)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    logprobs: int | None = None  # None: off; k: the chosen token's logprob plus k top alternatives
    prompt_logprobs: int | None = None
    # Prompt logprobs are wanted only from this prompt position on (earlier entries may be None), so the
    # positions before it may come from the prefix cache: lm-eval scores only a continuation after a
    # few-shot context that many requests share.
    prompt_logprobs_from: int = 0
    skip_special_tokens: bool = True
    # A constraint for the output: ("json_schema", schema dict) / ("json_object", None) / ("lark", text).
    constraint: tuple[str, Any] | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-5

    @property
    def needs_penalties(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0)

    @property
    def needs_filtering(self) -> bool:
        return (self.top_k not in (0, -1)) or self.top_p < 1.0 or self.min_p > 0.0


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class RequestOutput:
    """What one engine step produced for one request (a delta), delivered in order."""

    request_id: str
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string or stop token that ended it
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Request:
    """A sequence in the engine. Fields below `sink` are the engine's bookkeeping."""

    prompt_ids: list[int]
    params: SamplingParams
    sink: Callable[[RequestOutput], None]
    adapter: str | None = None
    request_id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    arrival: float = field(default_factory=time.monotonic)
    status: Status = Status.WAITING
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    # KV bookkeeping: the sequence occupies cache positions [kv_start, kv_end) of its slot.
    slot: int = -1
    kv_start: int = 0
    kv_end: int = 0
    # Paged KV (kv_blocks.py): the blocks holding positions [j·B, (j+1)·B), the prefix hashes of the full ones,
    # and how many leading positions the last prefill took from the prefix cache instead of computing them.
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    kv_cached: int = 0
    prompt_lp: list = field(default_factory=list)  # prompt logprobs of the chunks prefilled so far
    preemptions: int = 0  # times its blocks were taken back; it re-enters by recomputing prompt + output
    spec_rate: float = 1.0  # speculative decoding: running share of its draft tokens accepted (spec.SpecGate)
    generator: Any = None  # torch.Generator when the request has a seed
    matcher: Any = None  # llguidance matcher when the output is constrained
    detokenizer: Any = None
    first_token_at: float | None = None
    error: str | None = None  # set when this request's own processing failed: it finishes with "error"

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]
