"""Speculative decoding without a draft model: prompt lookup (n-gram) drafting.

A sequence's last n tokens (n = 3, 2, 1) are searched for earlier in its own prompt + output; the tokens that
followed the most recent match are the draft. The engine verifies every row's draft in one forward (the
paged prefill over [last token, draft...] after the cached positions) and keeps the longest prefix the model
agrees with greedily, plus the model's own next token: the output is the non-speculative greedy output,
token for token, up to floating-point near-ties between the one-token and the multi-token forward.
"""

from __future__ import annotations

from collections.abc import Sequence


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
