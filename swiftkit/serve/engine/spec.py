"""Speculative decoding without a draft model: prompt lookup (n-gram) drafting.

A sequence's last n tokens (n = 3, 2, 1) are searched for earlier in its own prompt + output; the tokens that
followed the most recent match are the draft. The engine verifies every row's draft in one forward (the
paged prefill over [last token, draft...] after the cached positions) and keeps the longest prefix the model
agrees with greedily, plus the model's own next token: the output is the non-speculative greedy output,
token for token, up to floating-point near-ties between the one-token and the multi-token forward.

Whether a step speculates is measured, not assumed (SpecGate): a verify forward costs more than a decode step
(on one CPU core 2x, since a few rows already make its small matmuls compute-bound; on a GPU about 1x), and on
free text drafts are mostly wrong (SmolLM2 telling a story: 10 of 287 draft tokens accepted, 0.65-0.72x with an
ungated verify every step). So the engine times both kinds of step and speculates when the rows' acceptance so far
predicts more tokens per second than decoding; every PROBE_EVERY steps it verifies anyway, so a row whose text
turns repetitive (a quoted passage) is noticed, and each probe that accepts nothing doubles that wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PROBE_EVERY = 16  # decode steps with drafts on offer between two verifies, at most (times the backoff)
MAX_BACKOFF = 8  # probes that accept nothing double the wait, up to 8 x PROBE_EVERY
EMA = 0.3  # weight of the newest measurement in the running averages


def ngram_draft(tokens: Sequence[int], k: int, max_n: int = 3) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the longest matching suffix (≤ max_n)."""
    length = len(tokens)
    if k <= 0:
        return []
    for n in range(min(max_n, length - 1), 0, -1):
        suffix = list(tokens[length - n:])
        first = suffix[0]
        for i in range(length - n - 1, -1, -1):
            if tokens[i] == first and list(tokens[i:i + n]) == suffix:
                return list(tokens[i + n:i + n + k])
    return []


def accept_greedy(draft: Sequence[int], greedy: Sequence[int]) -> list[int]:
    """greedy[j]: the model's argmax after the input token j ([last, *draft]). The tokens it emits: each
    draft token it agrees with, then its own token at the first disagreement (or after the whole draft)."""
    out = []
    for j, tok in enumerate(greedy[:len(draft) + 1]):
        out.append(tok)
        if j == len(draft) or tok != draft[j]:
            break
    return out


class SpecGate:
    """Decides per step whether verifying the drafts beats a decode step, from measured step times and each
    row's running acceptance (Request.spec_rate, optimistic at first)."""

    def __init__(self):
        self.decode_s: float | None = None  # running averages of the two kinds of step's wall time
        self.verify_s: float | None = None
        self.waited = 0  # decode steps taken although drafts were on offer, since the last verify
        self.backoff = 1  # the probe interval's multiple: doubled by probes that accept nothing
        self.probing = False

    def wants(self, rows: Sequence[Any], drafts: Sequence[Sequence[int]]) -> bool:
        if self.decode_s is None:  # time a decode step first, then a verify
            return False
        self.probing = self.waited >= PROBE_EVERY * self.backoff
        if self.probing or self.verify_s is None:
            return True
        tokens = sum(1 + r.spec_rate * len(d) for r, d in zip(rows, drafts, strict=True)) / len(rows)
        if tokens * self.decode_s > self.verify_s:  # tokens per second, verifying vs decoding
            return True
        self.waited += 1
        return False

    def decoded(self, seconds: float) -> None:
        self.decode_s = seconds if self.decode_s is None else (1 - EMA) * self.decode_s + EMA * seconds

    def verified(self, seconds: float, rows: Sequence[Any], drafts: Sequence[Sequence[int]],
                 accepted: Sequence[int]) -> None:
        self.verify_s = seconds if self.verify_s is None else (1 - EMA) * self.verify_s + EMA * seconds
        self.waited = 0
        if any(accepted):
            self.backoff = 1
        elif self.probing:
            self.backoff = min(2 * self.backoff, MAX_BACKOFF)
        for r, d, n in zip(rows, drafts, accepted, strict=True):
            if d:
                r.spec_rate = (1 - EMA) * r.spec_rate + EMA * n / len(d)
